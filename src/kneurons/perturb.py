"""Perturbations of a neuron set at the image positions, batched over (perturbation, image) rows.

Noise: for level n and seed s, v = n · r · z with z ~ N(0, I_P) from a generator seeded by s and r the run's
reference scale (1 for absolute levels): the same v for every neuron set at that (n, s), so every method gets the
same dose. An image with P_b image tokens gets the first P_b values of that stream (every image of one size the
same v). During the prompt pass, v[p] is added to O[l, p, i] for every (l, i) of the set and
every image position p. Zero-ablation sets those O[l, p, i] to 0. Decode steps run untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager

import numpy as np
import torch

from kneurons.errors import KneuronsError, ModelError
from kneurons.generation import (
    Continuation,
    Scored,
    batches_by_length,
    collate,
    generate_scored_batch,
    image_inputs,
)
from kneurons.hooks import edit_image_activations
from kneurons.models import LoadedModel
from kneurons.protocol import NOISE, Perturbation


def noise_vector(level: float, seed: int, n_positions: int) -> np.ndarray:
    """v = level · z, z ~ N(0, I_P) from ``numpy.random.default_rng(seed)``: (P,) float32 (a shorter P gives a
    prefix of a longer one's z)."""
    return (level * np.random.default_rng(seed).standard_normal(n_positions)).astype(np.float32)


def checked_neurons(loaded: LoadedModel, neurons: Sequence[Sequence], where: str) -> list[tuple[int, int]]:
    """``neurons`` as (layer, unit) pairs of this model (a set's [layer, unit, score] rows too); KneuronsError
    naming ``where`` and the first that is not one (negative indices do not wrap around)."""
    n_layers, d_ff = loaded.n_layers, loaded.d_ff
    out = []
    for n in neurons:
        try:
            layer, unit = n[0], n[1]
            ok = all(float(v) == int(v) for v in (layer, unit)) and not isinstance(n, str)
        except (TypeError, ValueError, IndexError):
            ok = False
        if not ok:
            raise KneuronsError(f"{where}: a neuron is a (layer, unit) pair of integers, got {n!r}")
        layer, unit = int(layer), int(unit)
        if not (0 <= layer < n_layers and 0 <= unit < d_ff):
            raise KneuronsError(
                f"{where}: neuron ({layer}, {unit}) is not in this model: layers 0-{n_layers - 1}, units 0-{d_ff - 1}"
            )
        out.append((layer, unit))
    return out


def layer_units(neurons: Sequence[Sequence], n_layers: int) -> list[np.ndarray]:
    """The units of a neuron set grouped by layer: a list of L int arrays (empty where a layer has none)."""
    units: list[list[int]] = [[] for _ in range(n_layers)]
    for layer, unit, *_ in neurons:
        units[int(layer)].append(int(unit))
    return [np.asarray(u, dtype=np.int64) for u in units]


@contextmanager
def perturb_units(
    loaded: LoadedModel, input_ids: torch.Tensor, units: Sequence[np.ndarray], keep: torch.Tensor, noise: torch.Tensor
) -> Iterator[None]:
    """Within the block, set O[l, p, i] ← keep[b] · O[l, p, i] + noise at the set's units ``units[l]`` and every
    image position p of each row b: ``keep`` (B,) is 1 for noise rows and 0 for ablated rows; ``noise`` (N,) holds
    the value at each image position of the batch, row by row (row b's P_b values; 0 for ablated rows). Rows of
    one batch may carry different perturbations and different numbers of image positions. Everything made here
    sits on the device of the tensor it edits (a model sharded over devices edits each layer where it runs)."""
    idx = [torch.as_tensor(u) for u in units]
    mask = loaded.image_positions(input_ids)
    keep = keep[mask.nonzero(as_tuple=True)[0].cpu()][:, None]  # (N, 1)
    noise = noise[:, None]  # (N, 1)

    def edit(layer: int, out: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> None:
        if len(idx[layer]):  # (N, n) elements: the set's units at the image positions only, on O's own device
            at = (rows[:, None], cols[:, None], idx[layer].to(out.device))
            out[at] = out[at] * keep.to(out.device, out.dtype) + noise.to(out.device, out.dtype)

    with edit_image_activations(loaded.act_fns, mask, edit):
        yield


@contextmanager
def patch_rows(
    loaded: LoadedModel,
    input_ids: torch.Tensor,
    units: Sequence[np.ndarray],
    chosen: Sequence[torch.Tensor],
    values: Sequence[torch.Tensor],
) -> Iterator[None]:
    """Within the block, set O[l, p, units[l][j]] ← values[l][p, j] at every image position p of each row b where
    ``chosen[l][b, j]``; the other units keep their own values (activation patching, a set per row).

    ``units[l]`` (n_l,) are the units any row patches in layer l; ``chosen[l]`` (B, n_l) bool says which each row
    patches; ``values[l]`` (P, n_l) holds a source image's own O' there. Every row must have that image's P image
    tokens (an inpainted image keeps its original's size). Everything made here sits on the device of the tensor
    it edits."""
    mask = loaded.image_positions(input_ids)
    counts = set(mask.sum(dim=1).tolist())
    p = next((int(v.shape[0]) for v in values if v.numel()), None)
    if p is not None and counts != {p}:
        raise ModelError(f"{loaded.path}: patching needs {p} image tokens in every row, the batch has {sorted(counts)}")

    def edit(layer: int, out: torch.Tensor, r: torch.Tensor, c: torch.Tensor) -> None:
        if not len(units[layer]):
            return
        idx = torch.as_tensor(units[layer], device=out.device)
        at = (r[:, None], c[:, None], idx)
        source = values[layer].to(device=out.device, dtype=out.dtype).repeat(out.shape[0], 1)  # (N, n_l)
        out[at] = torch.where(chosen[layer].to(out.device)[r], source, out[at])

    with edit_image_activations(loaded.act_fns, mask, edit):
        yield


def patch_units(
    loaded: LoadedModel, input_ids: torch.Tensor, units: Sequence[np.ndarray], values: Sequence[torch.Tensor]
) -> AbstractContextManager:
    """``patch_rows`` with every row patching every unit of ``units``: O[l, p, units[l][j]] ← values[l][p, j]."""
    rows = int(input_ids.shape[0])
    chosen = [torch.ones((rows, len(u)), dtype=torch.bool) for u in units]
    return patch_rows(loaded, input_ids, units, chosen, values)


def perturbed_batch(
    loaded: LoadedModel,
    parts: Sequence[dict[str, torch.Tensor]],
    units: Sequence[np.ndarray],
    rows: Sequence[tuple[Perturbation, int]],
    reference_scale: float = 1.0,
    max_new_tokens: int = 32,
    continuations: Sequence[Continuation] | None = None,
    generate: Callable[..., tuple[list[str], list[float | None]]] = generate_scored_batch,
) -> list[Scored]:
    """Greedy captions of one batch of rows (perturbation, image index) with the set ``units`` perturbed, each with
    the log p of its image's continuation (``continuations[i]`` of image i, None: no score); ``parts`` are the
    images' own processor outputs (kneurons.generation.image_inputs), noise levels in units of
    ``reference_scale``. ``generate`` runs the collated batch (kneurons.generation.generate_scored_batch)."""
    inputs = collate(loaded, [parts[i] for _, i in rows])
    counts = loaded.image_positions(inputs["input_ids"]).sum(dim=1).tolist()
    noise = [
        noise_vector(pert.level * reference_scale, pert.seed, p) if pert.kind == NOISE else np.zeros(p, np.float32)
        for (pert, _), p in zip(rows, counts, strict=True)
    ]
    keep = torch.tensor([float(pert.kind == NOISE) for pert, _ in rows])
    captions, logps = generate(
        loaded,
        inputs,
        max_new_tokens,
        context=lambda ids: perturb_units(loaded, ids, units, keep, torch.from_numpy(np.concatenate(noise))),
        continuations=[continuations[i] for _, i in rows] if continuations else None,
    )
    return list(zip(captions, logps, strict=True))


def perturbed_captions(
    loaded: LoadedModel,
    images: Sequence[np.ndarray],
    prompt: str,
    units: Sequence[np.ndarray],
    rows: Sequence[tuple[Perturbation, int]],
    reference_scale: float = 1.0,
    max_new_tokens: int = 32,
    batch_size: int | str = 64,
    continuations: Sequence[Continuation] | None = None,
) -> list[Scored]:
    """Greedy captions of each row (perturbation, image index) with the set ``units`` perturbed, each with the
    log p of its image's continuation (``continuations``, one per image; None: no score), ``batch_size`` rows per
    batch (halved on CUDA out-of-memory; "auto" starts large). Noise levels are in units of ``reference_scale``.

    Each image is processed once; each batch collates the processor outputs of its rows' images.
    """
    parts = image_inputs(loaded, images, prompt)
    return batches_by_length(
        [parts[i]["input_ids"].shape[1] for _, i in rows],
        batch_size,
        lambda chosen: perturbed_batch(
            loaded, parts, units, [rows[r] for r in chosen], reference_scale, max_new_tokens, continuations
        ),
    )


@contextmanager
def ablate_rows(
    loaded: LoadedModel, input_ids: torch.Tensor, units: Sequence[np.ndarray], chosen: Sequence[torch.Tensor]
) -> Iterator[None]:
    """Within the block, O[l, p, units[l][j]] ← 0 at every image position p of each row b where ``chosen[l][b, j]``
    (zero-ablation, a set per row; rows may hold different numbers of image positions)."""
    mask = loaded.image_positions(input_ids)

    def edit(layer: int, out: torch.Tensor, r: torch.Tensor, c: torch.Tensor) -> None:
        if not len(units[layer]):
            return
        at = (r[:, None], c[:, None], torch.as_tensor(units[layer], device=out.device))
        out[at] = out[at].masked_fill(chosen[layer].to(out.device)[r], 0)

    with edit_image_activations(loaded.act_fns, mask, edit):
        yield


def ablated_captions(
    loaded: LoadedModel,
    images: Sequence[np.ndarray],
    prompt: str,
    unit_sets: Sequence[Sequence[np.ndarray]],
    max_new_tokens: int = 32,
    batch_size: int | str = 64,
    continuations: Sequence[Continuation] | None = None,
) -> list[list[Scored]]:
    """Greedy captions of every image with each set of ``unit_sets`` (each by layer, ``layer_units``) zero-ablated
    at the image positions, the rows (set, image) of every set batched together, each with the log p of its image's
    continuation; one list of (caption, log p) per set, in image order."""
    n_layers = loaded.n_layers
    union = [
        np.unique(np.concatenate([s[layer] for s in unit_sets] or [np.zeros(0, np.int64)])) for layer in range(n_layers)
    ]
    member = [
        [np.isin(union[layer], s[layer]) for layer in range(n_layers)] for s in unit_sets
    ]  # set -> layer -> (n_l,)
    rows = [(s, i) for s in range(len(unit_sets)) for i in range(len(images))]
    parts = image_inputs(loaded, images, prompt)

    def run(chosen_rows: list[int]) -> list[Scored]:
        picked = [rows[r] for r in chosen_rows]
        inputs = collate(loaded, [parts[i] for _, i in picked])
        chosen = [torch.from_numpy(np.stack([member[s][layer] for s, _ in picked])) for layer in range(n_layers)]
        captions, logps = generate_scored_batch(
            loaded,
            inputs,
            max_new_tokens,
            context=lambda ids: ablate_rows(loaded, ids, union, chosen),
            continuations=[continuations[i] for _, i in picked] if continuations else None,
        )
        return list(zip(captions, logps, strict=True))

    scored = batches_by_length([parts[i]["input_ids"].shape[1] for _, i in rows], batch_size, run)
    return [scored[s * len(images) : (s + 1) * len(images)] for s in range(len(unit_sets))]
