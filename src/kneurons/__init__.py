"""kneurons: two-stage knowledge-neuron identification for LLaVA-family models (Sato & Takagi)."""

__version__ = "0.1.0"
