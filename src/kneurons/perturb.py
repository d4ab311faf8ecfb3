"""Noise on a neuron set at the image positions (DESIGN.md §2), batched over (level, seed, image) rows.

For level n and seed s, v = n · z with z ~ N(0, I_P) from a generator seeded by s: the same v for every image
and every neuron set at that (n, s). During the prompt pass, v[p] (times the unit's scale in relative mode) is
added to O[l, p, i] for every (l, i) of the set and every image position p; decode steps run untouched.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch

from kneurons.generation import adaptive_batches, generate_batch, prompt_inputs
from kneurons.hooks import edit_image_activations
from kneurons.models import LoadedModel


def noise_vector(level: float, seed: int, n_positions: int) -> np.ndarray:
    """v = level · z, z ~ N(0, I_P) from ``numpy.random.default_rng(seed)``: (P,) float32."""
    return (level * np.random.default_rng(seed).standard_normal(n_positions)).astype(np.float32)


def layer_units(neurons: Sequence[Sequence], n_layers: int) -> list[np.ndarray]:
    """The units of a neuron set grouped by layer: a list of L int arrays (empty where a layer has none)."""
    units: list[list[int]] = [[] for _ in range(n_layers)]
    for layer, unit, *_ in neurons:
        units[int(layer)].append(int(unit))
    return [np.asarray(u, dtype=np.int64) for u in units]


@contextmanager
def add_noise(
    loaded: LoadedModel,
    input_ids: torch.Tensor,
    units: Sequence[np.ndarray],
    noise: torch.Tensor,
    scales: Sequence[np.ndarray] | None = None,
) -> Iterator[None]:
    """Within the block, add ``noise`` (B, P) to the set's units at the image positions of each row.

    ``units[l]`` are layer l's perturbed units; ``scales[l]`` (same length) multiplies the noise per unit
    (relative mode), or 1 when None. Rows of one batch may carry different noise vectors.
    """
    device, dtype = loaded.device, loaded.model.dtype
    idx = [torch.as_tensor(u, device=device) for u in units]
    if scales is None:
        scales = [np.ones(len(u), np.float32) for u in units]
    scale = [torch.as_tensor(s, device=device, dtype=dtype) for s in scales]
    mask = loaded.image_positions(input_ids)
    noise = noise.to(device=device, dtype=dtype)

    def edit(layer: int, out: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> None:
        if len(idx[layer]):  # (B, P, n) elements: the set's units at the image positions only
            out[rows[..., None], cols[..., None], idx[layer]] += noise[:, :, None] * scale[layer][None, None, :]

    with edit_image_activations(loaded.act_fns, mask, edit):
        yield


def perturbed_captions(
    loaded: LoadedModel,
    images: Sequence[np.ndarray],
    prompt: str,
    units: Sequence[np.ndarray],
    rows: Sequence[tuple[float, int, int]],
    scales: Sequence[np.ndarray] | None = None,
    max_new_tokens: int = 32,
    batch_size: int | str = 64,
) -> list[str]:
    """Greedy captions under noise for each row (level, seed, image index), ``batch_size`` rows per generate
    (halved on CUDA out-of-memory; "auto" starts large).

    The images are processed once; each batch indexes their processor outputs.
    """
    p = loaded.n_image_tokens
    inputs = prompt_inputs(loaded, images, prompt)

    def run(sl: slice) -> list[str]:
        batch = rows[sl]
        noise = torch.from_numpy(np.stack([noise_vector(level, seed, p) for level, seed, _ in batch]))
        which = torch.tensor([i for _, _, i in batch], device=loaded.device)
        return generate_batch(
            loaded,
            {name: t[which] for name, t in inputs.items()},
            max_new_tokens,
            context=lambda ids: add_noise(loaded, ids, units, noise, scales),
        )

    return adaptive_batches(len(rows), batch_size, run)
