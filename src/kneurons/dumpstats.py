"""What an activation or GradCAM dump holds, in either storage mode.

Both modes keep the per-neuron statistics every later rule reads, (L, d_ff) float32 each: ``v_max`` = max_p V (stage 1),
``o_mean`` = mean_p O' (Pan), ``o_std`` = std_p O' (relative noise) and ``g_max`` = max_p g (stage 2), ``g_mean`` =
mean_p g (Schwettmann), ``ig`` = Σ_p IG (Dai et al.). "full" adds the whole arrays, O' of both images (L, P, d_ff)
float16 and g (L, P, d_ff) float32; "compact" adds only the (P,) traces of O' for the neurons with the largest max_p V
(a share of all L·d_ff), enough for the heatmaps of N_k ⊆ C^k (docs/storage.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kneurons.neurons import activation_difference

MODES = ("full", "compact")
# The datasets that hold the (P,) traces of O' in each mode (what `traces` reads).
TRACE_DATASETS = {"full": ["original"], "compact": ["trace_index", "traces"]}


def activation_record(original: np.ndarray, inpainted: np.ndarray, mode: str, trace_share: float) -> dict:
    """The datasets of one sample's activation dump from O' (L, P, d_ff) of the original and inpainted image
    (statistics from the float16 values stored in full mode, so both modes give the same statistics)."""
    if mode not in MODES:
        raise ValueError(f"dumps.mode must be one of {MODES}, got {mode!r}")
    original, inpainted = original.astype(np.float16), inpainted.astype(np.float16)
    o = original.astype(np.float32)
    v_max = activation_difference(original, inpainted).max(axis=1)
    record = {"v_max": v_max, "o_mean": o.mean(axis=1), "o_std": o.std(axis=1)}
    if mode == "full":
        return record | {"original": original, "inpainted": inpainted}
    n = min(v_max.size, max(1, round(trace_share * v_max.size)))
    top = np.sort(np.argsort(-v_max, axis=None, kind="stable")[:n])
    layers, units = np.unravel_index(top, v_max.shape)
    return record | {
        "trace_index": np.stack([layers, units], axis=1).astype(np.int32),
        "traces": original[layers, :, units],  # (n, P) float16
    }


def gradcam_record(g: np.ndarray, unit_logit: np.ndarray, mode: str, ig: np.ndarray) -> dict:
    """The datasets of one sample's GradCAM dump from g (L, P, d_ff), D[:, c] (L, d_ff) and the integrated gradients
    IG (L, P, d_ff) of P(c) (kneurons.integrated), kept as ``ig`` = Σ_p IG (L, d_ff)."""
    if mode not in MODES:
        raise ValueError(f"dumps.mode must be one of {MODES}, got {mode!r}")
    g = g.astype(np.float32)
    record = {
        "g_max": g.max(axis=1),
        "g_mean": g.mean(axis=1),
        "unit_logit": unit_logit.astype(np.float32),
        "ig": ig.astype(np.float32).sum(axis=1),
    }
    return record | {"gradcam": g} if mode == "full" else record


def traces(record: dict, neurons: Sequence[tuple[int, int]]) -> list[np.ndarray | None]:
    """O'[l, :, i] (P,) of each neuron (l, i) from an activation record; None where a compact dump lacks it."""
    if "original" in record:
        return [record["original"][layer, :, unit] for layer, unit in neurons]
    index = {(int(layer), int(unit)): j for j, (layer, unit) in enumerate(record["trace_index"])}
    return [record["traces"][index[n]] if n in index else None for n in neurons]
