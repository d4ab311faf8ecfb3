"""Restoration, the sufficiency test: caption an inpainted image (k removed) with a neuron set's units at the
image positions set to their values on the original image (activation patching). If the set carries k, the caption
names k again. The ceiling patches every unit of every layer; the floor patches nothing (the inpainted caption)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from kneurons.dumps import image_activations
from kneurons.generation import (
    Continuation,
    Scored,
    adaptive_batches,
    collate,
    generate_scored_batch,
    image_inputs,
)
from kneurons.models import LoadedModel
from kneurons.perturb import patch_rows


def every_unit(loaded: LoadedModel) -> list[np.ndarray]:
    """The ceiling's units: every unit of every layer (L arrays of d_ff)."""
    return [np.arange(loaded.d_ff, dtype=np.int64) for _ in range(loaded.n_layers)]


def no_unit(loaded: LoadedModel) -> list[np.ndarray]:
    """The floor's units: none (L empty arrays)."""
    return [np.zeros(0, np.int64) for _ in range(loaded.n_layers)]


def restored_captions(
    loaded: LoadedModel,
    original: np.ndarray,
    inpainted: np.ndarray,
    prompt: str,
    unit_sets: Sequence[Sequence[np.ndarray]],
    continuation: Continuation | None = None,
    max_new_tokens: int = 32,
    batch_size: int | str = 64,
) -> tuple[list[Scored], Scored]:
    """The inpainted image's greedy caption once per entry of ``unit_sets`` (L unit arrays each), those units at
    every image position patched to the original's O' (one forward of the original's prompt, (L, P, d_ff) in the
    model's dtype), batched ``batch_size`` rows at a time; and the original image's own caption. Each with the
    log p of ``continuation`` (the original's clean caption, scored at k's first token; None: no score)."""
    ((source, _),) = image_activations(loaded, [original], prompt)  # (L, P, d_ff)
    part_original, part_inpainted = image_inputs(loaded, [original, inpainted], prompt)
    n_layers, dtype = loaded.n_layers, loaded.model.dtype

    def run(sl: slice) -> list[Scored]:
        chunk = unit_sets[sl]
        union = [np.unique(np.concatenate([u[layer] for u in chunk])).astype(np.int64) for layer in range(n_layers)]
        chosen = [torch.from_numpy(np.stack([np.isin(union[i], u[i]) for u in chunk])) for i in range(n_layers)]
        values = [torch.from_numpy(np.ascontiguousarray(source[i][:, union[i]])).to(dtype) for i in range(n_layers)]
        captions, logps = generate_scored_batch(
            loaded,
            collate(loaded, [part_inpainted] * len(chunk)),
            max_new_tokens,
            context=lambda ids: patch_rows(loaded, ids, union, chosen, values),
            continuations=[continuation] * len(chunk) if continuation else None,
        )
        return list(zip(captions, logps, strict=True))

    patched = adaptive_batches(len(unit_sets), batch_size, run)
    captions, logps = generate_scored_batch(
        loaded, collate(loaded, [part_original]), max_new_tokens, continuations=[continuation] if continuation else None
    )
    return patched, (captions[0], logps[0])
