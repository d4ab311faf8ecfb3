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

from kneurons.names import ALL, CONTROL, NONE, PAIRS, RESTORE

SCORES = ("S_se", "S_re", "S_mean", "S_hal", "dlogp_own", "dlogp_other")  # Table II's scores, in column order
MARGINS = ("S_se", "S_re", "S_mean", "dlogp_own", "dlogp_other")  # compared with the control (columns d*)
RESTORATION = ("S_rest", "gap_closed")  # the restoration table's scores (and margins over the control)
PAIRED = ("S_se", "S_re", "S_mean", "S_rest", "dlogp_own", "dlogp_other")  # the pairwise table's differences


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def per_set_scores(lines: Iterable[dict]) -> dict[tuple, dict[str, float]]:
    """Scores of each (method, k, set, level), averaged over seeds and images.

    S_se = 1 − share of k's images whose caption still mentions k; S_re = share of the other images whose caption
    still mentions their own object; S_hal = share of the images without k whose caption mentions k
    (hallucinated target); S_mean = (S_se + S_re) / 2. dlogp_own and dlogp_other: the mean change of the
    teacher-forced log p of the image's own object (line ``logp``) from the no-perturbation reference's (method
    "none") on the same image, over k's images and over the others' (nan where the lines carry no log p).
    """
    lines = list(lines)
    scored = [ln for ln in lines if ln.get("logp") is not None]
    reference = {(ln["image_id"], ln["image_knowledge"]): ln["logp"] for ln in scored if ln["method"] == NONE}
    own, other, hal = defaultdict(list), defaultdict(list), defaultdict(list)
    d_own, d_other = defaultdict(list), defaultdict(list)
    for ln in lines:
        key = (ln["method"], ln["knowledge"], ln["set"], ln["level"])
        is_own = ln["image_knowledge"] == ln["knowledge"]
        (own if is_own else other)[key].append(ln["mentions"])
        if not ln["image_has_target"]:
            hal[key].append(ln["mentions_target"])
    for ln in scored:
        key = (ln["method"], ln["knowledge"], ln["set"], ln["level"])
        base = reference.get((ln["image_id"], ln["image_knowledge"]))
        if base is not None:
            (d_own if ln["image_knowledge"] == ln["knowledge"] else d_other)[key].append(ln["logp"] - base)
    keys = sorted(set(own) | set(other), key=str)
    return {
        k: {
            "S_se": 1.0 - _mean(own[k]),
            "S_re": _mean(other[k]),
            "S_mean": (1.0 - _mean(own[k]) + _mean(other[k])) / 2,
            "S_hal": _mean(hal[k]),
            "dlogp_own": _mean(d_own[k]),
            "dlogp_other": _mean(d_other[k]),
        }
        for k in keys
    }


def restoration_scores(lines: Iterable[dict], bounds: Iterable[dict]) -> dict[tuple, dict[str, float]]:
    """Restoration scores of each (method, k, set, RESTORE) from the restore lines of the set kinds and of the
    bounds (method ceiling / floor / original, one "set" per sample): S_rest = share of the set's patched captions
    that name k; gap_closed = Σ (log p patched − log p floor) / Σ (log p original − log p floor) over the samples
    it was patched into, the share of the gap between the inpainted and the original image's log p(k) that
    patching closes (nan without log p or where the gap sums to ≤ 0)."""
    bounds = list(bounds)
    floor = {(b["knowledge"], b["image_id"]): b["logp"] for b in bounds if b["method"] == "floor"}
    top = {(b["knowledge"], b["image_id"]): b["logp"] for b in bounds if b["method"] == "original"}
    named, gained, gap = defaultdict(list), defaultdict(float), defaultdict(float)
    missing: set[tuple] = set()
    for ln in [*lines, *bounds]:
        key = (ln["method"], ln["knowledge"], ln["set"], RESTORE)
        named[key].append(ln["mentions_target"])
        at = (ln["knowledge"], ln["image_id"])
        if None in (ln.get("logp"), floor.get(at), top.get(at)):
            missing.add(key)
            continue
        gained[key] += ln["logp"] - floor[at]
        gap[key] += top[at] - floor[at]
    return {
        key: {
            "S_rest": _mean(named[key]),
            "gap_closed": gained[key] / gap[key] if key not in missing and gap[key] > 0 else float("nan"),
        }
        for key in sorted(named, key=str)
    }


def pairwise(
    per_set: dict[tuple, dict[str, float]],
    pairs: Sequence[tuple[str, str]] = PAIRS,
    metrics: Sequence[str] = PAIRED,
    n_boot: int = 2000,
    seed: int = 0,
) -> list[dict]:
    """Paired differences a − b of per-set scores ``per_set[(method, k, set, level)]`` for each pair (a, b): the
    sets of one sample come from the same images, so each difference is taken within a (k, set, level) and rows
    are ``aggregate``'s over those differences (method "a − b"; nan where a score is missing)."""
    diffs = {}
    for a, b in pairs:
        for (method, k, set_id, level), va in per_set.items():
            vb = per_set.get((b, k, set_id, level)) if method == a else None
            if vb is not None:
                diffs[(f"{a} − {b}", k, set_id, level)] = {
                    m: va.get(m, float("nan")) - vb.get(m, float("nan")) for m in metrics
                }
    return aggregate(diffs, metrics, n_boot=n_boot, seed=seed)


def level_order(level: object) -> tuple[int, float]:
    """Tables list the reference first, then the noise levels ascending, their mean ("all"), then ablation."""
    if level == NONE:
        return (0, 0.0)
    if isinstance(level, int | float):
        return (1, float(level))
    return {ALL: (2, 0.0), RESTORE: (4, 0.0)}.get(level, (3, 0.0))


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
    return aggregate(per_set_scores(lines), SCORES, MARGINS, n_boot, seed)
