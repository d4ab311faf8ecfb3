"""The two-stage filter and the baseline scores, as pure functions of arrays.

Notation (the paper's Sec. II-B and II-C): O' is the act_fn output at the P image positions, shape (L, P, d_ff);
V = O'_original − O'_inpainted; g = O'_original ⊙ ∂y_c/∂O'_original (GradCAM). A neuron is (layer, unit).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

_QUANTILE = re.compile(r"^q(0(\.\d+)?|1(\.0+)?)$")


def activation_difference(original: np.ndarray, inpainted: np.ndarray) -> np.ndarray:
    """V = O'_o − O'_i in float32, (L, P, d_ff)."""
    return original.astype(np.float32) - inpainted.astype(np.float32)


def resolve_threshold(spec: float | str, values: np.ndarray) -> float:
    """A threshold from its spec: a number is absolute; ``"q0.99"`` is that quantile of ``values``.

    ``values`` are the per-neuron scores the threshold is compared with; an empty ``values`` gives +inf for a
    quantile (nothing can pass).
    """
    if isinstance(spec, str):
        if not _QUANTILE.match(spec):
            raise ValueError(f"threshold {spec!r}: expected a number or 'q<quantile in [0, 1]>' like 'q0.99'")
        if values.size == 0:
            return float("inf")
        return float(np.quantile(values, float(spec[1:])))
    return float(spec)


def candidates(v: np.ndarray, threshold_a: float, exclude_layers: tuple[int, ...] = ()) -> np.ndarray:
    """Stage 1, C^k: (L, d_ff) bool, neurons whose activation difference exceeds threshold_a at some patch.

    ``v`` is V (L, P, d_ff); layers in ``exclude_layers`` never become candidates.
    """
    mask = v.max(axis=1) > threshold_a
    mask[list(exclude_layers)] = False
    return mask


def final_set(candidate_mask: np.ndarray, g: np.ndarray, threshold_g: float) -> np.ndarray:
    """Stage 2, N_k: (L, d_ff) bool, candidates whose GradCAM g (L, P, d_ff) exceeds threshold_g at some patch."""
    return candidate_mask & (g.max(axis=1) > threshold_g)


def schwettmann_scores(g: np.ndarray) -> np.ndarray:
    """Schwettmann et al.: S[l, i] = mean_p g[l, p, i], (L, d_ff) from g (L, P, d_ff)."""
    return g.astype(np.float32).mean(axis=1)


def pan_scores(original: np.ndarray, unit_logit: np.ndarray) -> np.ndarray:
    """Pan et al.: S[l, i] = mean_p O'[l, p, i] · D_l[i, c], (L, d_ff).

    ``unit_logit`` (L, d_ff) is D_l[:, c] = W_U[c] · W_down_l, each unit's direct contribution to c's logit.
    """
    return original.astype(np.float32).mean(axis=1) * unit_logit.astype(np.float32)


def top_neurons(scores: np.ndarray, k: int, exclude_layers: tuple[int, ...] = ()) -> np.ndarray:
    """(L, d_ff) bool mask of the ``k`` highest-scoring neurons (ties broken by lower layer, then unit)."""
    masked = scores.astype(np.float64).copy()
    masked[list(exclude_layers)] = -np.inf
    flat = masked.reshape(-1)
    order = np.argsort(-flat, kind="stable")[: min(k, int(np.isfinite(flat).sum()))]
    mask = np.zeros(flat.shape, bool)
    mask[order] = True
    return mask.reshape(scores.shape)


def random_neurons(layer_counts: Sequence[int], d_ff: int, seed: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """(L, d_ff) bool mask with ``layer_counts[l]`` units drawn uniformly without replacement in each layer l, never
    a unit that ``exclude`` (L, d_ff) bool marks (None: any unit; the same draws as before exclusion existed).

    The control set: same size and layer distribution as the set it shadows, units chosen by chance.
    """
    rng = np.random.default_rng(seed)
    mask = np.zeros((len(layer_counts), d_ff), bool)
    for layer, n in enumerate(layer_counts):
        pool = d_ff if exclude is None else np.flatnonzero(~exclude[layer])
        if exclude is not None and n > len(pool):
            raise ValueError(f"layer {layer}: {n} units asked, {len(pool)} not excluded")
        mask[layer, rng.choice(pool, size=n, replace=False)] = True
    return mask


def shared_units(
    sets: Sequence[Sequence[Sequence]], share: float, budget: int | None = None
) -> list[tuple[int, int, float]]:
    """A knowledge's units from its per-sample sets (each a list of (layer, unit, ...)): those at least ``share`` of
    the sets hold (Dai et al.'s rule across a fact's prompts), as (layer, unit, fraction of sets), most shared first
    (then by layer and unit), at most ``budget`` of them (None: all)."""
    if not 0 < share <= 1:
        raise ValueError(f"share must be in (0, 1], got {share}")
    counts = Counter((int(n[0]), int(n[1])) for s in sets for n in {(int(m[0]), int(m[1])) for m in s})
    chosen = [(layer, unit, c / len(sets)) for (layer, unit), c in counts.items() if c >= share * len(sets) - 1e-9]
    chosen.sort(key=lambda t: (-t[2], t[0], t[1]))
    return chosen if budget is None else chosen[:budget]


@dataclass(frozen=True)
class NeuronSet:
    """A neuron set: (layer, unit) pairs with a score each, in descending score order."""

    neurons: list[tuple[int, int, float]]

    @classmethod
    def from_mask(cls, mask: np.ndarray, scores: np.ndarray) -> NeuronSet:
        """The neurons of a (L, d_ff) bool mask, scored by ``scores`` (L, d_ff), highest first."""
        layers, units = np.nonzero(mask)
        vals = scores[layers, units]
        order = np.lexsort((units, layers, -vals))
        return cls([(int(layers[j]), int(units[j]), float(vals[j])) for j in order])

    def __len__(self) -> int:
        return len(self.neurons)

    def rows(self) -> list[list]:
        """The neurons as a set's JSON file holds them: [layer, unit, score] lists."""
        return [[layer, unit, score] for layer, unit, score in self.neurons]

    def layer_counts(self, n_layers: int) -> list[int]:
        """How many of the set's neurons sit in each of the ``n_layers`` layers."""
        counts = [0] * n_layers
        for layer, _, _ in self.neurons:
            counts[layer] += 1
        return counts
