"""MiniGPT-4's configuration (Llama-2 variant, no Q-Former): the EVA ViT-g as a ``Blip2VisionConfig``, the Llama
decoder's own config, and how the two meet."""

from __future__ import annotations

from typing import ClassVar

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec


@strict
class MiniGPT4Config(PreTrainedConfig):
    """MiniGPT-4 = EVA ViT-g (``vision_config``) → ln_vision → CLS dropped → ``patches_per_token`` consecutive
    patches concatenated → ``llama_proj`` → Llama (``text_config``).

    ``image_token_id``: the id the processor writes at each image position of ``input_ids`` (P = patches /
    ``patches_per_token`` per image, 64 for ViT-g at 224 px); it may lie beyond the decoder's vocabulary (it is never
    looked up, its embedding is replaced by the image feature). ``ln_vision_eps``: MiniGPT-4's ln_vision is a plain
    ``nn.LayerNorm`` (eps 1e-5), where the EVA blocks use 1e-6.
    """

    model_type = "minigpt4"
    sub_configs_defaults: ClassVar[dict[str, SubConfigSpec]] = {
        "vision_config": SubConfigSpec(config_class=AutoConfig, model_type="blip_2_vision_model"),
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama"),
    }

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    image_token_id: int = 32000
    patches_per_token: int = 4
    ln_vision_eps: float = 1e-5
    tie_word_embeddings: bool = False
