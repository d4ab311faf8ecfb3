"""Greedy captioning of images in batches: one prompt, so every row has the same length and needs no padding."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TypeVar

import numpy as np
import torch

from kneurons.models import LoadedModel

# Given the batch's input_ids (B, T), return a context manager active during that batch's generate call.
BatchContext = Callable[[torch.Tensor], AbstractContextManager]


AUTO_BATCH = 512  # the first batch size tried when batch_size is "auto"

T = TypeVar("T")


def adaptive_batches(n: int, batch_size: int | str, run: Callable[[slice], list[T]]) -> list[T]:
    """``run`` over consecutive slices of ``n`` rows, ``batch_size`` rows at a time ("auto": AUTO_BATCH first).

    On CUDA out-of-memory the batch size halves and the same rows are retried (the smaller size is kept for the
    rest), so no row is lost or repeated; out-of-memory at one row is raised. Returns the outputs in row order.
    """
    size = AUTO_BATCH if batch_size == "auto" else int(batch_size)
    out: list[T] = []
    start = 0
    while start < n:
        stop = min(n, start + size)
        try:
            out += run(slice(start, stop))
        except torch.OutOfMemoryError:
            if size == 1:
                raise
            size //= 2
            logging.getLogger("kneurons").info("CUDA out of memory at %d rows: batch size now %d", stop - start, size)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            continue
        start = stop
    return out


def prompt_inputs(loaded: LoadedModel, images: Sequence[np.ndarray], prompt: str) -> dict[str, torch.Tensor]:
    """Processor inputs for (H, W, 3) uint8 RGB images with one text prompt (which holds the image token), on the
    model's device; pixel values in the model's dtype (float16 / bfloat16 on a GPU)."""
    inputs = loaded.processor(images=list(images), text=[prompt] * len(images), return_tensors="pt")
    return {
        k: v.to(loaded.device, dtype=loaded.model.dtype) if v.is_floating_point() else v.to(loaded.device)
        for k, v in inputs.items()
    }


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
    batch_size: int | str = 64,
    context: BatchContext | None = None,
) -> list[str]:
    """Greedy continuations of ``prompt`` for each image, ``batch_size`` images per generate call (halved on
    CUDA out-of-memory; "auto" starts large)."""
    return adaptive_batches(
        len(images),
        batch_size,
        lambda sl: generate_batch(loaded, prompt_inputs(loaded, images[sl], prompt), max_new_tokens, context),
    )
