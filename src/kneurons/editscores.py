"""The editing table: each knowledge-level set edited in the weights, scored on images it was never found on, beside
its random controls and the unedited model, with bootstrap intervals; and every method against every other.

Input lines are rule edit_eval's (one per caption or text): method (a set kind, or "none": unedited), draw, op,
strength, image_id, role (discovery, heldout, locality, or text), and what the caption names. Per image:

- erased: a k image's caption no longer names k (held-out: efficacy; discovery: the images the units were found on);
- dlogp: the change of the teacher-forced log p of k's first token in the image's clean caption;
- rewritten: a k image's caption names k' (the rewrite's target) and not k;
- kept: a locality image's caption still names every object its unedited caption named;
- hal: a locality image's caption names k (what amplifying should cause);
- dtext: the change of the mean log p of a split caption's tokens read with no image;
- BLEU, ROUGE-L, BERTScore of a locality image's caption against its unedited caption.

A control's value on an image is the mean over its draws; a margin (column d*) is the method minus its control,
paired by image. Scores average over a target's images, then over targets; intervals resample images within
targets (each role on its own), 95 % percentile.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from itertools import combinations

import numpy as np

from kneurons.editsets import DISCOVERY, HELDOUT, LOCALITY
from kneurons.figures import Bar, plot_editing
from kneurons.io import markdown_table, write_text, write_tsv_rows
from kneurons.names import ALL, CONTROL, EDIT_METHODS, NONE
from kneurons.tables import interval_cell, with_intervals
from kneurons.textmetrics import bertscore_model_path, pair_scores

Means = Mapping[str, np.ndarray]
# Each score from the per-role means of one target: efficacy on held-out images, the generality gap, ...
SCORES: dict[str, Callable[[Means], np.ndarray]] = {
    "efficacy": lambda m: m["erased_h"],
    "dlogp": lambda m: m["dlogp_h"],
    "gap": lambda m: m["erased_d"] - m["erased_h"],
    "gap_dlogp": lambda m: m["dlogp_d"] - m["dlogp_h"],
    "rewrite": lambda m: m["rewritten_h"],
    "locality": lambda m: m["kept_l"],
    "hallucination": lambda m: m["hal_l"],
    "text_dlogp": lambda m: m["dtext"],
    "BLEU": lambda m: m["BLEU"],
    "ROUGE-L": lambda m: m["ROUGE-L"],
    "BERTScore": lambda m: m["BERTScore"],
    "E_mean": lambda m: (m["erased_h"] + m["kept_l"]) / 2,
}
# Margins over the control: the same scores of the per-image differences (method − control mean), paired by image.
MARGINS = {
    f"d{m}": SCORES[m] for m in ("efficacy", "dlogp", "rewrite", "locality", "hallucination", "text_dlogp", "E_mean")
}
TEXT_METRICS = ("BLEU", "ROUGE-L", "BERTScore")
EDITING_COLUMNS = ["method", "knowledge", "op", "strength", "units", *with_intervals([*SCORES, *MARGINS])]
PAIRED = ("efficacy", "dlogp", "rewrite", "locality", "hallucination", "text_dlogp", "E_mean")
EDIT_PAIRWISE_COLUMNS = ["comparison", "knowledge", "op", "strength", *with_intervals(PAIRED), "verdict"]
# What a pairwise verdict reads, per operation: the score and what "more" of it means.
VERDICT = {
    "erase": ("E_mean", "more specific"),
    "ablate_hook": ("E_mean", "more specific"),
    "amplify": ("hallucination", "amplifies k more"),
    "rewrite": ("rewrite", "rewrites more"),
}
# The columns each operation's section of the Markdown table shows.
SHOWN = {
    "erase": ["efficacy", "defficacy", "dlogp", "gap", "locality", "dlocality", "BERTScore", "text_dlogp"],
    "ablate_hook": ["efficacy", "defficacy", "dlogp", "gap", "locality", "dlocality", "BERTScore"],
    "amplify": ["hallucination", "dhallucination", "dlogp", "locality", "dlocality", "BERTScore", "text_dlogp"],
    "rewrite": ["rewrite", "drewrite", "efficacy", "defficacy", "locality", "dlocality", "text_dlogp"],
}
OP_NAMES = {
    "erase": "erase (W_down columns × α, every position and step)",
    "ablate_hook": "zero-ablation by a hook (image positions, prompt pass only; rule perturb's)",
    "amplify": "amplify (columns × β)",
    "rewrite": "rewrite k → k' (columns moved by λ · their norm along E(k') − E(k))",
}
EDIT_TITLES = {  # a figure panel's title, before the strength
    "erase": "erase in the weights, α = ",
    "ablate_hook": "zero-ablation by a hook (image positions, prompt pass), α = ",
    "amplify": "amplify in the weights, β = ",
    "rewrite": "rewrite k → k' in the weights, λ = ",
}
EDITING_CAPTION = """Editing: each method's knowledge-level set (units shared by at least a share p of its
per-sample sets of k, found on k's samples of D) edited in the weights and judged on images it was never found on,
beside the same edit of random controls (the set's per-layer counts, units in no set of k; mean over draws) and the
unedited model. efficacy: share of held-out images of k whose caption no longer names k; dlogp: change of log p of
k's first token in their clean captions; gap: efficacy on the discovery images (the samples of D the units came
from) minus on the held-out ones (generality gap: > 0 where the units fit their own images better); rewrite: share
of held-out images naming k' instead of k; locality: share of images without k whose caption still names every object
the unedited caption named; hallucination: share of them whose caption names k; BERTScore: their edited caption
against the unedited one; text_dlogp: change of the mean log p of the split's captions read with no image. dX: the
method minus its control, paired by image. Intervals: 95 % bootstrap over images within targets.

"""
EDIT_PAIRWISE_CAPTION = """Editing, paired comparisons: a − b of each score for the same edit, paired by image within
targets, with 95 % bootstrap intervals. Verdict: erase and zero-ablation by E_mean = (efficacy + locality) / 2
("more specific"), amplify by hallucination, rewrite by rewrite; "not separable" where the interval holds 0.

"""


def _per_image(lines: Sequence[dict], bert_model: str, bert_layers: int) -> dict[tuple, dict[str, dict[int, float]]]:
    """Per (method, knowledge, op, strength): component -> {image_id: value}, controls averaged over draws."""
    ref = {(ln["knowledge"], ln["role"], ln["image_id"]): ln for ln in lines if ln["method"] == NONE and "role" in ln}
    edited = [ln for ln in lines if "role" in ln]  # the unedited model's too: its scores against itself
    pairs = [(ln["caption"], ref[(ln["knowledge"], LOCALITY, ln["image_id"])]["caption"]) for ln in edited
             if ln["role"] == LOCALITY]  # fmt: skip
    candidates, references = [c for c, _ in pairs], [r for _, r in pairs]
    text = pair_scores(candidates, references, bertscore_model_path(bert_model), bert_layers) if pairs else {}
    sums: dict[tuple, dict[str, dict[int, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    j = 0
    for ln in edited:
        key = (ln["method"], ln["knowledge"], ln["op"], ln["strength"])
        r = ref[(ln["knowledge"], ln["role"], ln["image_id"])]
        add = sums[key]
        i = ln["image_id"]
        if ln["role"] == "text":
            add["dtext"][i].append(ln["text_logp"] - r["text_logp"])
        elif ln["role"] in (HELDOUT, DISCOVERY):
            s = "h" if ln["role"] == HELDOUT else "d"
            add[f"erased_{s}"][i].append(float(not ln["names_target"]))
            add[f"dlogp_{s}"][i].append(ln["logp"] - r["logp"])
            add[f"rewritten_{s}"][i].append(float(ln["names_rewrite"] and not ln["names_target"]))
        else:
            add["kept_l"][i].append(float(set(r["named"]) <= set(ln["named"])))
            add["hal_l"][i].append(float(ln["names_target"]))
            for m in TEXT_METRICS:
                add[m][i].append(float(text[m][j]))
            j += 1
    out = {
        key: {c: {i: float(np.mean(v)) for i, v in by.items()} for c, by in comp.items()} for key, comp in sums.items()
    }
    for _, k, op, strength in [key for key in out if key[0] != NONE]:  # the unedited model beside every edit
        out[(NONE, k, op, strength)] = out[(NONE, k, NONE, 0.0)]
    return {key: v for key, v in out.items() if key[2] != NONE}


class _Missing(dict):
    """Component means where an absent component reads as nan (a score that needs it is nan)."""

    def __missing__(self, key: str) -> np.ndarray:
        return np.float64("nan")


def _bootstrap(
    per_target: Mapping[str, Mapping[str, np.ndarray]],
    scores: Mapping[str, Callable[[Means], np.ndarray]],
    n_boot: int,
    seed: str,
) -> dict[str, float]:
    """Each score's mean over targets of its value on the target's component means, and its 95 % interval (columns
    ``{score}_lo``, ``{score}_hi``): every component's images are resampled within each target once, and every
    score is computed on the same draws (nan components and targets left out of a score)."""
    rng = np.random.default_rng([0, zlib.crc32(seed.encode())])
    points: dict[str, list[float]] = defaultdict(list)
    boots: dict[str, list[np.ndarray]] = defaultdict(list)
    for comps in per_target.values():
        means = _Missing({c: np.float64(v.mean()) for c, v in comps.items() if v.size})
        drawn = _Missing({c: rng.choice(v, size=(n_boot, v.size)).mean(axis=1) for c, v in comps.items() if v.size})
        for name, fn in scores.items():
            point = float(fn(means))
            if np.isfinite(point):
                points[name].append(point)
                boots[name].append(fn(drawn))
    row = {}
    for name in scores:
        if points[name]:
            lo, hi = np.percentile(np.mean(boots[name], axis=0), [2.5, 97.5])
            row |= {name: float(np.mean(points[name])), f"{name}_lo": float(lo), f"{name}_hi": float(hi)}
        else:
            row |= dict.fromkeys((name, f"{name}_lo", f"{name}_hi"), float("nan"))
    return row


def _arrays(values: Mapping[str, Mapping[int, float]]) -> dict[str, np.ndarray]:
    return {c: np.array([by[i] for i in sorted(by)], np.float64) for c, by in values.items()}


def _paired(a: Mapping[str, Mapping[int, float]], b: Mapping[str, Mapping[int, float]]) -> dict[str, np.ndarray]:
    """Per component, the per-image differences a − b over the images both have."""
    return {
        c: np.array([a[c][i] - b[c][i] for i in sorted(a[c]) if i in b.get(c, {})], np.float64) for c in a if c in b
    }


def _rows(
    groups: Mapping[tuple, Mapping[str, np.ndarray]],
    scores: Mapping[str, Callable[[Means], np.ndarray]],
    n_boot: int,
) -> dict[tuple, dict[str, float]]:
    """For each (method, op, strength) of ``groups`` ((method, k, op, strength) -> component arrays), per target and
    over all targets: each score with its interval."""
    by_edit: dict[tuple, dict[str, Mapping[str, np.ndarray]]] = defaultdict(dict)
    for (method, k, op, strength), comps in groups.items():
        by_edit[(method, op, strength)][k] = comps
    out = {}
    for (method, op, strength), per_k in by_edit.items():
        for k in [ALL, *sorted(per_k)]:
            chosen = per_k if k == ALL else {k: per_k[k]}
            out[(method, k, op, strength)] = _bootstrap(chosen, scores, n_boot, f"{method}|{k}|{op}|{strength}")
    return out


def editing_rows(
    per_image: Mapping[tuple, Mapping[str, Mapping[int, float]]], sizes: Mapping[tuple, float], n_boot: int = 2000
) -> list[dict]:
    """The editing table's rows: every (method, knowledge or "all", op, strength) with its scores, and for a method
    with a control its margins over it."""
    scored = _rows({key: _arrays(v) for key, v in per_image.items()}, SCORES, n_boot)
    margins = _rows(
        {
            key: _paired(v, per_image[(key[0] + CONTROL, *key[1:])])
            for key, v in per_image.items()
            if (key[0] + CONTROL, *key[1:]) in per_image
        },
        MARGINS,
        n_boot,
    )
    nan = dict.fromkeys(with_intervals(list(MARGINS)), float("nan"))
    rows = []
    for (method, k, op, strength), values in scored.items():
        mine = [v for (m, kk), v in sizes.items() if m == method and k in (ALL, kk)]
        units = float(np.mean(mine)) if mine else float("nan")
        rows.append(
            {"method": method, "knowledge": k, "op": op, "strength": strength, "units": units}
            | values
            | margins.get((method, k, op, strength), nan)
        )
    return sorted(rows, key=_order)


def _order(row: dict) -> tuple:
    method = row.get("method", row.get("comparison", ""))
    ops = list(VERDICT)
    return (row["knowledge"] != ALL, row["knowledge"], ops.index(row["op"]), row["strength"], method)


def pairwise_rows(per_image: Mapping[tuple, Mapping[str, Mapping[int, float]]], n_boot: int = 2000) -> list[dict]:
    """Every method against every other (each in EDIT_METHODS that has sets), for each edit: a − b of the scores, paired
    by image within targets, with a verdict (``VERDICT``)."""
    methods = [m for m in EDIT_METHODS if any(key[0] == m for key in per_image)]
    groups = {}
    for a, b in combinations(methods, 2):
        for (method, k, op, strength), v in per_image.items():
            other = per_image.get((b, k, op, strength))
            if method == a and other is not None:
                groups[(f"{a} − {b}", k, op, strength)] = _paired(v, other)
    rows = []
    for (comparison, k, op, strength), values in _rows(groups, {m: SCORES[m] for m in PAIRED}, n_boot).items():
        metric, word = VERDICT[op]
        a, b = comparison.split(" − ")
        lo, hi = values[f"{metric}_lo"], values[f"{metric}_hi"]
        verdict = f"{a} {word}" if lo > 0 else f"{b} {word}" if hi < 0 else "not separable"
        rows.append(
            {"comparison": comparison, "knowledge": k, "op": op, "strength": strength} | values | {"verdict": verdict}
        )
    return sorted(rows, key=_order)


def _sections(rows: Sequence[dict], name: str, shown: Callable[[str], list[str]]) -> str:
    """The Markdown of the rows over all targets, one section per (op, strength)."""
    out = []
    for op, strength in dict.fromkeys((r["op"], r["strength"]) for r in rows if r["knowledge"] == ALL):
        chosen = [r for r in rows if r["knowledge"] == ALL and (r["op"], r["strength"]) == (op, strength)]
        columns = shown(op)
        cells = [
            {
                c: interval_cell(r, c) if f"{c}_lo" in r else (f"{r[c]:.1f}" if isinstance(r[c], float) else r[c])
                for c in columns
            }
            for r in chosen
        ]
        out.append(f"### {OP_NAMES[op]}, strength {strength:g}\n\n" + markdown_table(cells, columns))
    return "\n".join(out) if out else f"No {name}: no knowledge-level set was edited.\n"


def editing_tables(lines: Sequence[dict], bert_model: str, bert_layers: int, out: Mapping[str, str]) -> None:
    """The editing table (CSV: every row; Markdown: over all targets, per edit), the pairwise table and the
    figure, from rule edit_eval's ``lines``."""
    per_image = _per_image(lines, bert_model, bert_layers)
    sizes = {(ln["method"], ln["knowledge"]): float(ln["set_size"]) for ln in lines if "set_size" in ln}
    rows = editing_rows(per_image, sizes)
    write_tsv_rows(out["csv"], rows, EDITING_COLUMNS, delimiter=",")
    write_text(out["md"], EDITING_CAPTION + _sections(rows, "edit", lambda op: ["method", "units", *SHOWN[op]]))
    pairs = pairwise_rows(per_image)
    write_tsv_rows(out["pairwise_csv"], pairs, EDIT_PAIRWISE_COLUMNS, delimiter=",")
    write_text(
        out["pairwise_md"],
        EDIT_PAIRWISE_CAPTION + _sections(pairs, "comparison", lambda op: ["comparison", *PAIRED, "verdict"]),
    )
    overall = [r for r in rows if r["knowledge"] == ALL]
    panels = {}
    for op, strength in dict.fromkeys((r["op"], r["strength"]) for r in overall):
        headline = VERDICT[op][0] if op != "ablate_hook" and op != "erase" else "efficacy"
        for metric in (headline, "locality"):
            chosen = [r for r in overall if (r["op"], r["strength"]) == (op, strength)]
            order = [NONE, *(k for m in EDIT_METHODS for k in (m, m + CONTROL))]
            panels[f"{EDIT_TITLES[op]}{strength:g}: {metric}"] = [
                Bar(r["method"], (r[metric], r[f"{metric}_lo"], r[f"{metric}_hi"]), r["method"].endswith(CONTROL))
                for r in sorted(chosen, key=lambda r: order.index(r["method"]))
            ]
    plot_editing(panels, out["png"])
