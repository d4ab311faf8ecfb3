"""Greedy captioning of images in batches: each image processed alone, rows left-padded to one length (images of
different sizes have different numbers of image tokens); rows leave the batch as their caption ends."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

from kneurons.errors import ModelError
from kneurons.models import LoadedModel

# Given the batch's input_ids (B, T), return a context manager active during that batch's generate call.
BatchContext = Callable[[torch.Tensor], AbstractContextManager]


AUTO_BATCH = 512  # the first batch size tried when batch_size is "auto"

T = TypeVar("T")
Scored = tuple[str, float | None]  # a caption and the teacher-forced log p read in its prompt pass (None: not asked)


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


def batches_by_length(lengths: Sequence[int], batch_size: int | str, run: Callable[[list[int]], list[T]]) -> list[T]:
    """``run`` over batches of row indices, each batch of rows of one ``lengths`` value (``adaptive_batches``
    within each length, in order of first appearance), the outputs returned in row order. Rows of one length are
    collated without padding, so a row's numbers do not depend on the other rows of its batch (in bfloat16 a
    left-padded row's do, slightly), and no compute goes to padding."""
    groups: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        groups.setdefault(int(n), []).append(i)
    out: list = [None] * len(lengths)
    for rows in groups.values():
        results = adaptive_batches(len(rows), batch_size, lambda sl, rows=rows: run(rows[sl]))
        for i, result in zip(rows, results, strict=True):
            out[i] = result
    return out


def _on_device(loaded: LoadedModel, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Processor outputs on the model's device; floating tensors (pixels) in the model's dtype."""
    return {
        k: v.to(loaded.device, dtype=loaded.model.dtype) if v.is_floating_point() else v.to(loaded.device)
        for k, v in inputs.items()
    }


def image_inputs(loaded: LoadedModel, images: Sequence[np.ndarray], prompt: str) -> list[dict[str, torch.Tensor]]:
    """Each (H, W, 3) uint8 RGB image's own processor output with the text ``prompt`` (which holds the image
    placeholder): a batch of one per image, on the model's device. Images may differ in size, and so in P.
    ModelError if ``prompt`` lacks the processor's image placeholder."""
    placeholder = getattr(loaded.processor, "image_token", None)
    if placeholder and placeholder not in prompt:
        raise ModelError(
            f"{loaded.path}: the prompt {prompt!r} lacks this processor's image placeholder {placeholder!r}"
        )
    return [_on_device(loaded, loaded.processor(images=[im], text=[prompt], return_tensors="pt")) for im in images]


def collate(loaded: LoadedModel, parts: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """One batch from per-image processor outputs (each a batch of one): the family's per-token tensors (B, T)
    left-padded to the longest row (``input_ids`` with the pad id, the others with 0, so the attention mask hides
    the padding); every per-image tensor concatenated along its first dimension and zero-padded in the others
    (LLaVA-NeXT's and Idefics3's tile counts; Qwen2-VL's flattened patches (Σ patches, C) and ``image_grid_thw``
    simply concatenate)."""
    pad_id = loaded.processor.tokenizer.pad_token_id
    t = max(int(p["input_ids"].shape[1]) for p in parts)
    batch = {}
    for key in parts[0]:
        tensors = [p[key] for p in parts]
        if key in loaded.family.token_keys:
            fill = pad_id if key == "input_ids" and pad_id is not None else 0
            rows = [x.new_full((1, t), fill) for x in tensors]
            for row, x in zip(rows, tensors, strict=True):
                row[:, t - x.shape[1] :] = x
        else:
            shape = [max(int(x.shape[d]) for x in tensors) for d in range(1, tensors[0].ndim)]
            rows = [x.new_zeros((x.shape[0], *shape)) for x in tensors]
            for row, x in zip(rows, tensors, strict=True):
                row[(slice(None), *(slice(0, n) for n in x.shape[1:]))] = x
        batch[key] = torch.cat(rows)
    return batch


def prompt_inputs(loaded: LoadedModel, images: Sequence[np.ndarray], prompt: str) -> dict[str, torch.Tensor]:
    """One batch of processor inputs for (H, W, 3) uint8 RGB images with one text ``prompt``: each image processed
    alone, then collated (left-padded where P differs); on the model's device, pixels in the model's dtype."""
    return collate(loaded, image_inputs(loaded, images, prompt))


def _stop_ids(loaded: LoadedModel) -> torch.Tensor:
    """The token ids that end a caption: the generation config's eos_token_id (an id or a list), else the
    tokenizer's."""
    eos = loaded.model.generation_config.eos_token_id
    if eos is None:
        eos = loaded.processor.tokenizer.eos_token_id
    if eos is None:
        raise ModelError(f"{loaded.path}: no eos_token_id in the generation config or the tokenizer")
    return torch.as_tensor(eos if isinstance(eos, list) else [eos], device=loaded.device)  # where the ids are


@dataclass(frozen=True)
class Continuation:
    """A fixed text after one row's prompt, read teacher-forced in the prompt pass: ``ids`` (n,) int64, its token
    ids (what follows the prompt's own ids); ``index``, the one whose log-probability is read, at the position that
    predicts it (kneurons.logprob.continuation)."""

    ids: torch.Tensor
    index: int


def extended(
    loaded: LoadedModel, inputs: dict[str, torch.Tensor], continuations: Sequence[Continuation]
) -> dict[str, torch.Tensor]:
    """``inputs`` (B, T) with each row's continuation appended after the (left-padded) prompt and right-padded to
    the longest: (B, T + C). The prompts keep their columns, so the cache of the first T positions is the prompt's."""
    width = max(len(c.ids) for c in continuations)
    pad_id = loaded.processor.tokenizer.pad_token_id
    out = dict(inputs)
    for key in loaded.family.token_keys:
        x = inputs[key]
        tail = x.new_full((x.shape[0], width), pad_id if key == "input_ids" and pad_id is not None else 0)
        for b, c in enumerate(continuations):
            if key == "input_ids":
                tail[b, : len(c.ids)] = c.ids.to(x.device)
            elif key == "attention_mask":
                tail[b, : len(c.ids)] = 1
        out[key] = torch.cat([x, tail], dim=1)
    return out


def generate_scored_batch(
    loaded: LoadedModel,
    inputs: dict[str, torch.Tensor],
    max_new_tokens: int = 32,
    context: BatchContext | None = None,
    continuations: Sequence[Continuation] | None = None,
) -> tuple[list[str], list[float | None]]:
    """``greedy_batch``'s captions and log-probabilities."""
    captions, logps, _ = greedy_batch(loaded, inputs, max_new_tokens, context, continuations)
    return captions, logps


@torch.inference_mode()
def greedy_batch(
    loaded: LoadedModel,
    inputs: dict[str, torch.Tensor],
    max_new_tokens: int = 32,
    context: BatchContext | None = None,
    continuations: Sequence[Continuation] | None = None,
) -> tuple[list[str], list[float | None], list[list[int]]]:
    """Greedy continuations of one batch of processor ``inputs`` (every tensor (B, ...)), decoded without special
    tokens and stripped; with ``continuations`` (one per row), each row's teacher-forced log p of its
    continuation's token ``index`` (None without); and the ids each row emitted before its end token.

    ``context`` is active during the prompt pass only (decode steps run untouched). The continuations ride in that
    same pass, after the prompts; the KV cache is then cropped back to the prompts, so greedy decoding starts
    from the prompt as without them (one pass, not two). A row that emits an end token leaves the batch (its rows
    of the KV cache are dropped), so a finished caption costs nothing more while the others go on; rows may be
    left-padded (positions follow the attention mask).
    """
    model = loaded.model
    ids = inputs["input_ids"]
    n_prompt = ids.shape[1]
    attention = inputs["attention_mask"]
    full = extended(loaded, inputs, continuations) if continuations else inputs
    positions = loaded.positions(full)  # (B, T'), or (3, B, T') for M-RoPE
    keep_logits = full["input_ids"].shape[1] - n_prompt + 1  # the last prompt position and every continuation's
    with context(full["input_ids"]) if context else nullcontext():
        out = model(**full, position_ids=positions, use_cache=True, logits_to_keep=keep_logits)
    logps: list[float | None] = [None] * ids.shape[0]
    if continuations:
        logits = out.logits.float()
        for b, c in enumerate(continuations):
            logps[b] = float(torch.log_softmax(logits[b, c.index], dim=-1)[int(c.ids[c.index])])
        out.cache.crop(n_prompt - full["input_ids"].shape[1])  # remove the continuations' positions
    cache, stop = out.cache, _stop_ids(loaded)
    alive = torch.arange(ids.shape[0], device=ids.device)
    prompt_positions = positions[..., :n_prompt]
    position = prompt_positions.reshape(-1, *ids.shape).amax(dim=(0, 2))  # each row's last position (padding holds 0)
    tokens = torch.zeros((ids.shape[0], max_new_tokens), dtype=torch.long, device=ids.device)
    lengths = [max_new_tokens] * ids.shape[0]  # new tokens before the end token
    step_token = out.logits[:, 0].argmax(-1).to(ids.device)  # logits sit on the last layer's device
    for step in range(max_new_tokens):
        tokens[alive, step] = step_token
        going = ~torch.isin(step_token, stop)
        for row in alive[~going].tolist():
            lengths[row] = step
        if step == max_new_tokens - 1 or not bool(going.any()):
            break
        if not bool(going.all()):  # drop the finished rows from the batch and the cache
            keep = going.nonzero().squeeze(1)
            alive, step_token, attention, position = alive[keep], step_token[keep], attention[keep], position[keep]
            cache.batch_select_indices(keep)
        attention = torch.cat([attention, attention.new_ones(len(alive), 1)], dim=1)
        position = position + 1
        out = model(
            input_ids=step_token[:, None],
            attention_mask=attention,
            position_ids=position[:, None],
            cache=cache,
            use_cache=True,
        )
        step_token = out.logits[:, -1].argmax(-1).to(ids.device)
    kept = [row[:n] for row, n in zip(tokens.tolist(), lengths, strict=True)]
    return [c.strip() for c in loaded.processor.batch_decode(kept, skip_special_tokens=True)], logps, kept


def _greedy_rows(
    loaded: LoadedModel,
    parts: Sequence[dict[str, torch.Tensor]],
    continuations: Sequence[Continuation] | None,
    max_new_tokens: int,
    batch_size: int | str,
    context: BatchContext | None = None,
) -> list[tuple[str, float | None, list[int]]]:
    """``greedy_batch`` over every image's processor output (``parts``, ``image_inputs``), batched by sequence
    length: each image's caption, log p of its continuation (None without) and emitted ids, in image order."""

    def run(rows: list[int]) -> list[tuple[str, float | None, list[int]]]:
        inputs = collate(loaded, [parts[i] for i in rows])
        chosen = [continuations[i] for i in rows] if continuations else None
        return list(zip(*greedy_batch(loaded, inputs, max_new_tokens, context, chosen), strict=True))

    return batches_by_length([p["input_ids"].shape[1] for p in parts], batch_size, run)


def scored_parts(
    loaded: LoadedModel,
    parts: Sequence[dict[str, torch.Tensor]],
    continuations: Sequence[Continuation] | None = None,
    max_new_tokens: int = 32,
    batch_size: int | str = 64,
    context: BatchContext | None = None,
) -> list[Scored]:
    """``scored_captions`` of images already through the processor (``parts``, ``image_inputs``): what a job that
    captions the same images many times (one per weight edit) computes once."""
    rows = _greedy_rows(loaded, parts, continuations, max_new_tokens, batch_size, context)
    return [(caption, logp) for caption, logp, _ in rows]


def scored_captions(
    loaded: LoadedModel,
    images: Sequence[np.ndarray],
    prompt: str,
    continuations: Sequence[Continuation] | None = None,
    max_new_tokens: int = 32,
    batch_size: int | str = 64,
    context: BatchContext | None = None,
) -> list[Scored]:
    """Greedy continuations of ``prompt`` for each image, each with the teacher-forced log p of its continuation
    (``continuations``, one per image; None: no score), ``batch_size`` images per batch (halved on CUDA
    out-of-memory; "auto" starts large)."""
    parts = image_inputs(loaded, images, prompt)
    return scored_parts(loaded, parts, continuations, max_new_tokens, batch_size, context)


def generate_captions(
    loaded: LoadedModel,
    images: Sequence[np.ndarray],
    prompt: str,
    max_new_tokens: int = 32,
    batch_size: int | str = 64,
    context: BatchContext | None = None,
) -> list[str]:
    """Greedy continuations of ``prompt`` for each image (``scored_captions`` without scores)."""
    return [c for c, _ in scored_captions(loaded, images, prompt, None, max_new_tokens, batch_size, context)]


def emitted_captions(
    loaded: LoadedModel,
    images: Sequence[np.ndarray],
    prompt: str,
    max_new_tokens: int = 32,
    batch_size: int | str = 64,
) -> list[tuple[str, list[int]]]:
    """Greedy continuations of ``prompt`` for each image with the ids the model emitted (before its end token):
    what log p and GradCAM teacher-force later (kneurons.dumps.target_position), never a re-tokenised text."""
    return [
        (caption, ids)
        for caption, _, ids in _greedy_rows(
            loaded, image_inputs(loaded, images, prompt), None, max_new_tokens, batch_size
        )
    ]
