"""Table II's columns and caption, and what every table shares: interval cells, and the notes on targets without
samples or sets."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from kneurons.metrics import MARGINS, SCORES
from kneurons.samples import Candidate, Knowledge, reason_counts, selected


def coverage_notes(targets: Sequence[Knowledge], rows: Sequence[Candidate], empty: Counter) -> dict[str, str]:
    """Why a knowledge target has fewer rows than the others: no sample of the sample table ``rows`` passed the
    constraints (with the reason counts), or some of its neuron sets are empty (``empty``: their number per
    (method, knowledge)). {knowledge: note}; targets with nothing to say are left out."""
    notes = {}
    for target in targets:
        mine = [r for r in rows if r.knowledge == target.name]
        if not selected(mine):
            reasons = ", ".join(f"{why}: {n}" for why, n in sorted(reason_counts(mine).items())) or "no candidate image"
            notes[target.name] = f"no sample passed the constraints ({reasons})"
    for (method, k), n in sorted(empty.items()):
        notes[k] = "; ".join(filter(None, [notes.get(k), f"{method}: {n} empty set(s), no neuron over the thresholds"]))
    return notes


def notes_markdown(notes: dict[str, str]) -> str:
    """The notes of coverage_notes as a Markdown list under a heading (nothing when there are none)."""
    return "\nNotes\n\n" + "".join(f"- {k}: {note}\n" for k, note in notes.items()) if notes else ""


def with_intervals(metrics: Sequence[str]) -> list[str]:
    """The columns of ``metrics``, each followed by the bounds of its 95 % interval."""
    return [f"{m}{suffix}" for m in metrics for suffix in ("", "_lo", "_hi")]


def interval_cell(row: dict, metric: str) -> str:
    """``mean [lo, hi]`` with 3 decimals, or "–" where the row has no value (e.g. a control's margin)."""
    if row[metric] != row[metric]:  # nan
        return "–"
    return f"{row[metric]:.3f} [{row[metric + '_lo']:.3f}, {row[metric + '_hi']:.3f}]"


MARGIN_COLUMNS = [f"d{m}" for m in MARGINS]
TABLE2_COLUMNS = [
    "method",
    "knowledge",
    "level",
    "sets",
    "empty_sets",
    *with_intervals(SCORES + tuple(MARGIN_COLUMNS)),
    "note",
]
TABLE2_CAPTION = """Table II: suppression S_se, retention S_re, S_mean = (S_se + S_re) / 2 and hallucination S_hal
over all knowledge targets (mean over targets of each target's mean over its neuron sets), with 95 % bootstrap intervals
(sets resampled within targets). Level: noise level (the same noise for every method; noise_scale.json gives r),
"all" the mean over the noise levels, "ablation" the set zero-ablated, "none" no perturbation (the reference).
X_control is X's random control (X's per-layer counts, random units, perturbed the same way); dS_se, dS_re and
dS_mean are X minus its control, paired by set: a set specific to its knowledge has dS_se > 0 and dS_re near 0.
dlogp_own: the change of the teacher-forced log p of k's first token (at the position that predicts it in the image's
clean caption, GradCAM's) on k's images, from the unperturbed model on the same image; dlogp_other: the same for the
other images' own objects; ddlogp_own and ddlogp_other are X minus its control. A log p moves before a greedy caption
flips, so these separate sets that S_se cannot. ours_stage1: |N_k| random units of C^k (stage 1 only).
Paired comparisons between methods: results/tables/pairwise.md.

"""
