"""What the figures and the report say, from rows already read: which neurons a heatmap shows, the dose-response
points and the specificity statement, the noise level of the example captions."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from kneurons.figures import DosePoint
from kneurons.metrics import level_name, level_order
from kneurons.names import ALL, RESTORE


def strongest(neurons: Sequence[Sequence], v_max: np.ndarray, top: int) -> list[tuple[int, int]]:
    """The ``top`` neurons (layer, unit) of a set with the largest activation difference max_p V (``v_max`` (L,
    d_ff)): the heatmaps' choice."""
    return sorted(((int(n[0]), int(n[1])) for n in neurons), key=lambda n: -v_max[n])[:top]


def dose_point(row: dict, level: float | str) -> DosePoint:
    scores = ("S_re", "S_se", "dlogp_other", "dlogp_own")
    return DosePoint(level, {m: tuple(float(row[f"{m}{s}"] or "nan") for s in ("", "_lo", "_hi")) for m in scores})


def dose_level(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def specificity_statement(rows: Sequence[dict], pairs: Sequence[dict]) -> str:
    """What the intervals say at each perturbation, from Table II's rows and the pairwise table's rows over all
    knowledge: each pairwise comparison's S_mean difference (paired by sample) with its verdict ("more specific"
    or "not separable"), which methods suppress k beyond their control (dS_se interval above 0), and each
    method's dS_mean (margin over its own control)."""
    by_level: dict[float | str, list[tuple[str, dict[str, tuple[float, float, float]]]]] = defaultdict(list)
    for r in rows:
        has_margin = r["dS_mean"] != "" and not math.isnan(float(r["dS_mean"]))
        if r["knowledge"] == ALL and r["level"] != ALL and has_margin:
            margins = {m: tuple(float(r[f"{m}{s}"]) for s in ("", "_lo", "_hi")) for m in ("dS_se", "dS_mean")}
            by_level[dose_level(r["level"])].append((r["method"], margins))
    compared: dict[float | str, list[str]] = defaultdict(list)
    for p in pairs:
        if p["knowledge"] == ALL and p["level"] not in (ALL, RESTORE) and p["S_mean"] not in ("", "nan"):
            cell = f"{float(p['S_mean']):+.3f} [{float(p['S_mean_lo']):+.3f}, {float(p['S_mean_hi']):+.3f}]"
            compared[dose_level(p["level"])].append(f"{p['comparison']} {cell} {p['verdict']}")
    parts, beyond = [], []
    for level in sorted(by_level, key=level_order):
        ranked = sorted(by_level[level], key=lambda mv: -mv[1]["dS_mean"][0])
        name = level_name(level)
        parts.append(f"{name}: " + " > ".join(f"{m} {v['dS_mean'][0]:+.3f}" for m, v in ranked))
        beyond += [f"{m} at {name}" for m, v in ranked if v["dS_se"][1] > 0]
    paired = [f"{level_name(level)}: " + ", ".join(compared[level]) for level in sorted(compared, key=level_order)]
    return " ".join(
        [
            "Pairwise S_mean differences (paired by sample; results/tables/pairwise.md) and what their intervals say: "
            + ("; ".join(paired) if paired else "no comparison")
            + ".",
            "Suppressing k beyond its own control (dS_se interval above 0): "
            + ("; ".join(beyond) if beyond else "none")
            + ".",
            "dS_mean (method minus its control) by perturbation: " + "; ".join(parts) + ".",
        ]
    )


def example_level(levels: Sequence[float], level: float | None) -> float:
    """The noise level of the example captions: ``level`` if given, else the middle configured level (paper: 80)."""
    if level is None:
        return float(sorted(levels)[len(levels) // 2])
    if float(level) not in {float(v) for v in levels}:
        raise ValueError(f"report.example_level: {level} is not one of noise.levels {list(levels)}")
    return float(level)
