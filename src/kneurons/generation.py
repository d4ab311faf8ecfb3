"""Greedy captioning of images in batches: one prompt, so every row has the same length and needs no padding."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch

from kneurons.models import LoadedModel

# Given the batch's input_ids (B, T), return a context manager active during that batch's generate call.
BatchContext = Callable[[torch.Tensor], AbstractContextManager]


def _batches(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def prompt_inputs(loaded: LoadedModel, images: Sequence[np.ndarray], prompt: str) -> dict[str, torch.Tensor]:
    """Processor inputs for (H, W, 3) uint8 RGB images with one text prompt (which holds the image token)."""
    inputs = loaded.processor(images=list(images), text=[prompt] * len(images), return_tensors="pt")
    return {k: v.to(loaded.device) for k, v in inputs.items()}


@torch.inference_mode()
def generate_batch(
    loaded: LoadedModel, inputs: dict[str, torch.Tensor], max_new_tokens: int = 32, context: BatchContext | None = None
) -> list[str]:
    """Greedy continuations of one batch of processor ``inputs`` (every tensor (B, ...)), decoded without special
    tokens and stripped."""
    ctx = context(inputs["input_ids"]) if context else nullcontext()
    with ctx:
        out = loaded.model.generate(**inputs, do_sample=False, num_beams=1, max_new_tokens=max_new_tokens)
    new = out[:, inputs["input_ids"].shape[1] :]
    return [c.strip() for c in loaded.processor.batch_decode(new, skip_special_tokens=True)]


def generate_captions(
    loaded: LoadedModel,
    images: Sequence[np.ndarray],
    prompt: str,
    max_new_tokens: int = 32,
    batch_size: int = 64,
    context: BatchContext | None = None,
) -> list[str]:
    """Greedy continuations of ``prompt`` for each image, ``batch_size`` images per generate call."""
    captions: list[str] = []
    for sl in _batches(len(images), batch_size):
        captions += generate_batch(loaded, prompt_inputs(loaded, images[sl], prompt), max_new_tokens, context)
    return captions
