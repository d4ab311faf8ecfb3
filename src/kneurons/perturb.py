"""Perturbations of a neuron set at the image positions (DESIGN.md §2), batched over (perturbation, image) rows.

Noise: for level n and seed s, v = n · r · z with z ~ N(0, I_P) from a generator seeded by s and r the run's
reference scale (1 for absolute levels): the same v for every neuron set at that (n, s), so every method gets the
same dose. An image with P_b image tokens gets the first P_b values of that stream (every image of one size the
same v). During the prompt pass, v[p] is added to O[l, p, i] for every (l, i) of the set and
every image position p. Zero-ablation sets those O[l, p, i] to 0. Decode steps run untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from kneurons.errors import ModelError
from kneurons.generation import adaptive_batches, collate, generate_batch, image_inputs
from kneurons.hooks import edit_image_activations
from kneurons.models import LoadedModel

NOISE, ABLATION = "noise", "ablation"


@dataclass(frozen=True)
class Perturbation:
    """One way to perturb a set: ``kind`` "noise" at ``level`` (a multiple of the reference scale) with ``seed``,
    or "ablation" (O = 0 at the image positions; level and seed unused)."""

    kind: str
    level: float = 0.0
    seed: int = 0

    @property
    def label(self) -> float | str:
        """The perturbation's name in the tables: the noise level, or "ablation"."""
        return self.level if self.kind == NOISE else self.kind


def perturbations(levels: Sequence[float], seeds: int, ablation: bool) -> list[Perturbation]:
    """Noise at every (level, seed), then zero-ablation if ``ablation``."""
    noise = [Perturbation(NOISE, float(level), seed) for level in levels for seed in range(seeds)]
    return noise + ([Perturbation(ABLATION)] if ablation else [])


def noise_vector(level: float, seed: int, n_positions: int) -> np.ndarray:
    """v = level · z, z ~ N(0, I_P) from ``numpy.random.default_rng(seed)``: (P,) float32 (a shorter P gives a
    prefix of a longer one's z)."""
    return (level * np.random.default_rng(seed).standard_normal(n_positions)).astype(np.float32)


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
    one batch may carry different perturbations and different numbers of image positions."""
    device, dtype = loaded.device, loaded.model.dtype
    idx = [torch.as_tensor(u, device=device) for u in units]
    mask = loaded.image_positions(input_ids)
    keep = keep.to(device=device, dtype=dtype)[mask.nonzero(as_tuple=True)[0]][:, None]  # (N, 1)
    noise = noise.to(device=device, dtype=dtype)[:, None]  # (N, 1)

    def edit(layer: int, out: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> None:
        if len(idx[layer]):  # (N, n) elements: the set's units at the image positions only
            at = (rows[:, None], cols[:, None], idx[layer])
            out[at] = out[at] * keep + noise

    with edit_image_activations(loaded.act_fns, mask, edit):
        yield


@contextmanager
def patch_units(
    loaded: LoadedModel, input_ids: torch.Tensor, units: Sequence[np.ndarray], values: Sequence[torch.Tensor]
) -> Iterator[None]:
    """Within the block, set O[l, p, i] ← values[l][p, j] for the set's units ``units[l]`` (i = units[l][j]) at every
    image position p of every row: ``values[l]`` is (P, n_l), a source image's own activations there (activation
    patching); every row must have that image's P image tokens."""
    device, dtype = loaded.device, loaded.model.dtype
    idx = [torch.as_tensor(u, device=device) for u in units]
    mask = loaded.image_positions(input_ids)
    counts = set(mask.sum(dim=1).tolist())
    p = next((int(v.shape[0]) for v in values if v.numel()), None)
    if p is not None and counts != {p}:
        raise ModelError(f"{loaded.path}: patching needs {p} image tokens in every row, the batch has {sorted(counts)}")
    rows = int(mask.shape[0])
    tiled = [v.to(device=device, dtype=dtype).repeat(rows, 1) for v in values]  # (N, n_l), row by row

    def edit(layer: int, out: torch.Tensor, r: torch.Tensor, c: torch.Tensor) -> None:
        if len(idx[layer]):
            out[(r[:, None], c[:, None], idx[layer])] = tiled[layer]

    with edit_image_activations(loaded.act_fns, mask, edit):
        yield


def perturbed_batch(
    loaded: LoadedModel,
    parts: Sequence[dict[str, torch.Tensor]],
    units: Sequence[np.ndarray],
    rows: Sequence[tuple[Perturbation, int]],
    reference_scale: float = 1.0,
    max_new_tokens: int = 32,
    generate: Callable[..., list[str]] = generate_batch,
) -> list[str]:
    """Greedy captions of one batch of rows (perturbation, image index) with the set ``units`` perturbed; ``parts``
    are the images' own processor outputs (kneurons.generation.image_inputs), noise levels in units of
    ``reference_scale``. ``generate`` runs the collated batch (kneurons.generation.generate_batch)."""
    inputs = collate(loaded, [parts[i] for _, i in rows])
    counts = loaded.image_positions(inputs["input_ids"]).sum(dim=1).tolist()
    noise = [
        noise_vector(pert.level * reference_scale, pert.seed, p) if pert.kind == NOISE else np.zeros(p, np.float32)
        for (pert, _), p in zip(rows, counts, strict=True)
    ]
    keep = torch.tensor([float(pert.kind == NOISE) for pert, _ in rows])
    return generate(
        loaded,
        inputs,
        max_new_tokens,
        context=lambda ids: perturb_units(loaded, ids, units, keep, torch.from_numpy(np.concatenate(noise))),
    )


def perturbed_captions(
    loaded: LoadedModel,
    images: Sequence[np.ndarray],
    prompt: str,
    units: Sequence[np.ndarray],
    rows: Sequence[tuple[Perturbation, int]],
    reference_scale: float = 1.0,
    max_new_tokens: int = 32,
    batch_size: int | str = 64,
) -> list[str]:
    """Greedy captions of each row (perturbation, image index) with the set ``units`` perturbed, ``batch_size``
    rows per batch (halved on CUDA out-of-memory; "auto" starts large). Noise levels are in units of
    ``reference_scale``.

    Each image is processed once; each batch collates the processor outputs of its rows' images.
    """
    parts = image_inputs(loaded, images, prompt)
    return adaptive_batches(
        len(rows),
        batch_size,
        lambda sl: perturbed_batch(loaded, parts, units, rows[sl], reference_scale, max_new_tokens),
    )
