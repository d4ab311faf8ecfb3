"""kneurons: two-stage knowledge-neuron identification for vision-language models (Sato & Takagi).

``from kneurons import KnowledgeNeurons`` is the notebook API (kneurons.api, docs/api.md); it is imported on first
use, so a workflow job that needs no model does not pay for torch.
"""

__version__ = "0.1.0"
__all__ = ["Effect", "Finding", "KnowledgeNeurons", "Settings"]


def __getattr__(name: str):
    if name in __all__:
        from kneurons import api

        return getattr(api, name)
    raise AttributeError(f"module 'kneurons' has no attribute {name!r}")
