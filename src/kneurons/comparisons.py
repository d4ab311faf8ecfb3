"""The restoration table (sufficiency) and the pairwise table (paired differences between methods): their columns,
captions and verdicts."""

from __future__ import annotations

from kneurons.metrics import PAIRED, RESTORATION
from kneurons.names import RESTORE
from kneurons.tables import with_intervals

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
