"""The restoration table and figure (sufficiency), and the pairwise table: paired differences between methods,
from the perturbation and restoration files."""

from __future__ import annotations

from collections.abc import Sequence

from kneurons.figures import Bar, plot_restoration
from kneurons.io import write_text, write_tsv_rows
from kneurons.metrics import (
    ALL,
    CEILING,
    CONTROL,
    FLOOR,
    ORIGINAL,
    PAIRED,
    RESTORATION,
    RESTORE,
    aggregate,
    level_name,
    markdown_table,
    pairwise,
    per_set_scores,
    restoration_scores,
    table_order,
)
from kneurons.neuronsets import SHADOWED
from kneurons.tables import coverage_notes, interval_cell, notes_markdown, read_perturbations, with_intervals

BOUNDS = (CEILING, FLOOR, ORIGINAL)


def read_restorations(restore_jsonls: Sequence[str]) -> tuple[list[dict], list[dict], dict]:
    """The restoration lines of the set kinds, those of the bounds, and the empty sets per (method, knowledge)."""
    lines, empty = read_perturbations(restore_jsonls)
    return [ln for ln in lines if ln["method"] not in BOUNDS], [ln for ln in lines if ln["method"] in BOUNDS], empty


RESTORATION_MARGINS = tuple(f"d{m}" for m in RESTORATION)
RESTORATION_COLUMNS = ["method", "knowledge", "sets", *with_intervals(RESTORATION + RESTORATION_MARGINS), "note"]
RESTORATION_CAPTION = """Restoration (sufficiency): each sample's inpainted image (k removed) captioned with a
neuron set's units at the image positions patched to the original image's values, every set of k patched into every
sample of k. S_rest: share of these captions that name k again; gap_closed: the share of the gap between the
inpainted and the original image's log p(k) (k's first token in the original's clean caption) that patching closes.
X_control: X's random control patched the same way; dS_rest and dgap_closed: X minus its control, paired by set.
ceiling: every unit of every layer patched (what the FFN outputs at the image positions can carry at most; far
below 1 where k also reaches the caption through the residual stream and attention); floor: nothing patched (the
inpainted caption, 0 by selection); original: the original image unedited. ours_stage1 (|N_k| random units of C^k)
favours nothing GradCAM adds: patching moves exactly the units whose values differ most, so compare ours with it,
not only with its random control. Intervals: 95 % bootstrap over sets within targets.

"""


def restoration_stage(
    restore_jsonls: Sequence[str], knowledge_tsv: str, samples_tsv: str, out_csv: str, out_md: str, out_png: str
) -> None:
    """Rule restoration: the restoration table (CSV: every row; Markdown: over all knowledge) and its figure (each
    method beside its control, the ceiling and the floor, with intervals)."""
    lines, bounds, empty = read_restorations(restore_jsonls)
    notes = coverage_notes(knowledge_tsv, samples_tsv, empty)
    rows = aggregate(restoration_scores(lines, bounds), RESTORATION, RESTORATION)
    for r in rows:
        del r["level"]  # one level, restoration's
        r["note"] = "" if r["knowledge"] == ALL else notes.get(r["knowledge"], "")
    write_tsv_rows(out_csv, rows, RESTORATION_COLUMNS, delimiter=",")
    overall = {r["method"]: r for r in rows if r["knowledge"] == ALL}
    order = [*(k for m in SHADOWED for k in (m, m + CONTROL)), *BOUNDS]
    columns = ["method", "sets", *RESTORATION, *RESTORATION_MARGINS]
    shown = [
        {"method": m, "sets": overall[m]["sets"]} | {c: interval_cell(overall[m], c) for c in columns[2:]}
        for m in order
        if m in overall
    ]
    body = markdown_table(shown, columns) if shown else "No set was patched: no knowledge target has a sample in D.\n"
    write_text(out_md, RESTORATION_CAPTION + body + notes_markdown(notes))
    panels = {
        metric: [
            Bar(m, tuple(overall[m][f"{metric}{s}"] for s in ("", "_lo", "_hi")), m.endswith(CONTROL))
            for m in order
            if m in overall and m != ORIGINAL
        ]
        for metric in RESTORATION
    }
    plot_restoration(panels, out_png)


def verdict(row: dict) -> str:
    """What a pairwise row's interval says of a − b: at a perturbation level, which is more specific (S_mean);
    under restoration, which restores k more often (S_rest); else "not separable" (the interval holds 0)."""
    a, b = row.get("comparison", row.get("method", "")).split(" − ")
    metric, word = ("S_rest", "restores more") if row["level"] == RESTORE else ("S_mean", "more specific")
    lo, hi = row[f"{metric}_lo"], row[f"{metric}_hi"]
    if lo > 0:
        return f"{a} {word}"
    if hi < 0:
        return f"{b} {word}"
    return "not separable"


PAIRWISE_COLUMNS = ["comparison", "knowledge", "level", "sets", *with_intervals(PAIRED), "verdict"]
PAIRWISE_CAPTION = """Pairwise comparisons: a − b of each score, paired by sample (the sets of one sample come from
the same images and are perturbed with the same noise), with 95 % bootstrap intervals over samples within targets.
Level: noise level (in units of r), "all" the mean over the noise levels, "ablation" zero-ablation, "restore"
restoration (S_rest). Verdict: a or b "more specific" where the S_mean interval lies above or below 0 ("restores
more" for S_rest), else "not separable". ours − ours_stage1 asks what GradCAM's second stage adds over the
activation difference alone.

"""


def pairwise_stage(perturb_jsonls: Sequence[str], restore_jsonls: Sequence[str], out_csv: str, out_md: str) -> None:
    """Rule pairwise: the pairwise table (CSV: every row; Markdown: over all knowledge, each comparison and
    level)."""
    per_set = per_set_scores(read_perturbations(perturb_jsonls)[0])
    lines, bounds, _ = read_restorations(restore_jsonls)
    per_set |= restoration_scores(lines, bounds)
    rows = sorted(pairwise(per_set), key=table_order)
    for r in rows:
        r["verdict"] = verdict(r)
        r["comparison"] = r.pop("method")
    write_tsv_rows(out_csv, rows, PAIRWISE_COLUMNS, delimiter=",")
    shown = [
        {"comparison": r["comparison"], "level": level_name(r["level"]), "sets": r["sets"], "verdict": r["verdict"]}
        | {m: interval_cell(r, m) for m in PAIRED}
        for r in rows
        if r["knowledge"] == ALL
    ]
    columns = ["level", "comparison", "sets", *PAIRED, "verdict"]
    body = markdown_table(shown, columns) if shown else "No set was perturbed: nothing to compare.\n"
    write_text(out_md, PAIRWISE_CAPTION + body)
