"""MiniGPT-4's processor: its eval preprocessing (``blip2_image_eval``: 224 × 224 bicubic, no crop, CLIP mean/std)
and its prompt handling (the text split at the image placeholder, each segment tokenised alone, BOS on the first
only, P image tokens where the placeholder was), with the language model's own tokenizer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transformers import BatchFeature, ProcessorMixin

IMAGE_PLACEHOLDER = "<ImageHere>"


class MiniGPT4Processor(ProcessorMixin):
    """Images → ``pixel_values`` (B, 3, 224, 224); each text's ``image_token`` → ``num_image_tokens`` copies of
    ``image_token_id`` in ``input_ids`` (B, T), padded on the tokenizer's padding side."""

    def __init__(
        self,
        image_processor: Any = None,
        tokenizer: Any = None,
        image_token: str = IMAGE_PLACEHOLDER,
        num_image_tokens: int = 64,
        chat_template: str | None = None,
        **kwargs,
    ) -> None:
        self.image_token = image_token
        self.num_image_tokens = int(num_image_tokens)
        self.image_token_id = int(tokenizer.convert_tokens_to_ids(image_token))
        super().__init__(image_processor, tokenizer, chat_template=chat_template)

    def _ids(self, text: str) -> list[int]:
        """MiniGPT-4's ``get_context_emb``: segments around each placeholder tokenised separately (special tokens
        added to the first only), the image tokens between them."""
        ids: list[int] = []
        for i, segment in enumerate(text.split(self.image_token)):
            if i:
                ids += [self.image_token_id] * self.num_image_tokens
            ids += self.tokenizer(segment, add_special_tokens=i == 0)["input_ids"]
        return ids

    def __call__(
        self,
        images: Any = None,
        text: str | Sequence[str] | None = None,
        return_tensors: str | None = None,
        **kwargs,
    ) -> BatchFeature:
        """``pixel_values`` of ``images`` and the ``input_ids`` / ``attention_mask`` of ``text`` (one placeholder per
        image, in order); ValueError if the placeholders and the images differ in number."""
        texts = [text] if isinstance(text, str) else list(text or [])
        data: dict[str, Any] = {}
        n_images = 0
        if images is not None:
            pixels = self.image_processor(images, return_tensors=return_tensors)
            data.update(pixels)
            n_images = len(pixels["pixel_values"])
        placeholders = sum(t.count(self.image_token) for t in texts)
        if texts and placeholders != n_images:
            raise ValueError(f"MiniGPT-4: {placeholders} {self.image_token} placeholder(s) for {n_images} image(s)")
        if texts:
            data.update(self.tokenizer.pad({"input_ids": [self._ids(t) for t in texts]}, return_tensors=return_tensors))
        return BatchFeature(data, tensor_type=return_tensors)
