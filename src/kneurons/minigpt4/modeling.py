"""MiniGPT-4 (Llama-2 variant, no Q-Former) from transformers' parts, so that it loads, batches, caches and generates
like every other ``*ForConditionalGeneration``.

The image path is MiniGPT-4's ``encode_img``: ``h = ln_vision(ViT(x))[:, 1:]`` (B, 256, w) is viewed as
(B, 64, 4·w), 4 consecutive patches concatenated per token, then ``llama_proj`` (4·w → d). The ViT is
``Blip2VisionModel`` (the EVA ViT-g architecture) whose final ``post_layernorm`` plays ln_vision with MiniGPT-4's
eps 1e-5; ``last_hidden_state`` is taken, never ``pooler_output`` (which applies the norm twice). Image features
enter the decoder at the positions of ``image_token_id`` in ``input_ids`` (P per image), as in LLaVA.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn
from transformers import AutoModel, Blip2VisionModel, GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.modeling_utils import slice_logits_to_keep

from kneurons.minigpt4.configuration import MiniGPT4Config


class MiniGPT4PreTrainedModel(PreTrainedModel):
    config_class = MiniGPT4Config
    config: MiniGPT4Config
    base_model_prefix = "model"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules: ClassVar[list[str]] = ["Blip2EncoderLayer", "Blip2VisionEmbeddings", "LlamaDecoderLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True

    def _init_weights(self, module: nn.Module) -> None:
        """Random weights only matter for models built from a config (tests); a converted model loads all."""
        std = self.config.get_text_config().initializer_range
        if isinstance(module, nn.Linear | nn.Conv2d):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif hasattr(module, "class_embedding"):  # Blip2VisionEmbeddings
            nn.init.normal_(module.class_embedding, std=std)
            nn.init.normal_(module.position_embedding, std=std)
        elif hasattr(module, "variance_epsilon") and hasattr(module, "weight"):  # LlamaRMSNorm
            nn.init.ones_(module.weight)


class MiniGPT4Model(MiniGPT4PreTrainedModel):
    """ViT + ln_vision + 4-patch concatenation + ``llama_proj`` + the Llama decoder (without its LM head)."""

    def __init__(self, config: MiniGPT4Config) -> None:
        super().__init__(config)
        self.vision_model = Blip2VisionModel(config.vision_config)
        self.vision_model.post_layernorm.eps = config.ln_vision_eps  # ln_vision: nn.LayerNorm's default eps
        width = config.vision_config.hidden_size * config.patches_per_token
        self.llama_proj = nn.Linear(width, config.text_config.hidden_size)
        self.language_model = AutoModel.from_config(config.text_config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_image_features(self, pixel_values: torch.Tensor, **kwargs) -> torch.Tensor:
        """(B, 3, 224, 224) pixels → (B, P, d) image features, P = patches / patches_per_token (64 for ViT-g)."""
        dtype = self.vision_model.embeddings.patch_embedding.weight.dtype
        h = self.vision_model(pixel_values=pixel_values.to(dtype)).last_hidden_state[:, 1:]  # ln_vision, no CLS
        b, n, w = h.shape
        per = self.config.patches_per_token
        if n % per:
            raise ValueError(f"MiniGPT-4: {n} patches do not split into tokens of {per} patches")
        return self.llama_proj(h.reshape(b, n // per, w * per))

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        """The decoder's output over ``input_ids`` (B, T) with each image's P features at its image-token
        positions (``pixel_values`` (B_img, 3, H, W), one image per row holding image tokens)."""
        if inputs_embeds is None:
            image_mask = input_ids == self.config.image_token_id
            # the image token may lie beyond the decoder's vocabulary: look up a valid id, then overwrite it
            inputs_embeds = self.get_input_embeddings()(input_ids.masked_fill(image_mask, 0))
            if pixel_values is not None:
                features = self.get_image_features(pixel_values).to(inputs_embeds.device, inputs_embeds.dtype)
                if int(image_mask.sum()) != features.shape[0] * features.shape[1]:
                    raise ValueError(
                        f"MiniGPT-4: {int(image_mask.sum())} image tokens in input_ids but {features.shape[0]} "
                        f"image(s) of {features.shape[1]} features"
                    )
                inputs_embeds = inputs_embeds.masked_scatter(image_mask.unsqueeze(-1), features)
        return self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            **kwargs,
        )


class MiniGPT4ForConditionalGeneration(MiniGPT4PreTrainedModel, GenerationMixin):
    """MiniGPT-4 with the Llama LM head: logits (B, T, V) over the decoder's vocabulary."""

    def __init__(self, config: MiniGPT4Config) -> None:
        super().__init__(config)
        self.model = MiniGPT4Model(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def get_decoder(self) -> nn.Module:
        return self.model.language_model

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """Logits (B, T, V) of MiniGPT4Model's output (``logits_to_keep``: of the last positions only); every other
        argument (attention_mask, position_ids, cache, inputs_embeds, use_cache) goes to MiniGPT4Model."""
        out = self.model(input_ids=input_ids, pixel_values=pixel_values, **kwargs)
        logits = self.lm_head(slice_logits_to_keep(out.last_hidden_state, logits_to_keep))
        return CausalLMOutputWithPast(
            logits=logits, cache=out.cache, hidden_states=out.hidden_states, attentions=out.attentions
        )
