"""The embedded captioner's quality bounds (config captioner_quality) on hand-made evaluations."""

from __future__ import annotations

import pytest
import yaml

from kneurons.errors import ModelError
from kneurons.synth.evaluate import quality_checks, require_quality
from tests.helpers import DEFAULT_CONFIG

GOOD = {"precision": 0.95, "recall": 0.91, "constraint_pass_share": 0.85, "ablation_recall_ratio": 0.33}


def test_the_defaults_bounds_are_the_readmes():
    bounds = yaml.safe_load(DEFAULT_CONFIG.read_text())["captioner_quality"]
    assert bounds == {"precision": 0.9, "recall": 0.9, "constraint_pass_share": 0.6, "ablation_recall_ratio": 0.5}


def test_a_captioner_within_every_bound_passes():
    bounds = yaml.safe_load(DEFAULT_CONFIG.read_text())["captioner_quality"]
    checks = quality_checks(GOOD, bounds)
    assert all(c["met"] for c in checks.values()) and checks["ablation_recall_ratio"]["at_least"] is False
    require_quality(checks, "eval.log")
    at_the_bounds = {"precision": 0.9, "recall": 0.9, "constraint_pass_share": 0.6, "ablation_recall_ratio": 0.5}
    require_quality(quality_checks(at_the_bounds, bounds), "eval.log")  # a bound itself is reached


@pytest.mark.parametrize(
    ("key", "value", "shown"),
    [("precision", 0.89, "precision 0.89 < 0.9"), ("recall", 0.5, "recall 0.5 < 0.9"),
     ("constraint_pass_share", 0.2, "constraint_pass_share 0.2 < 0.6"),
     ("ablation_recall_ratio", 0.51, "ablation_recall_ratio 0.51 > 0.5")],
)  # fmt: skip
def test_each_missed_bound_is_named_in_one_line(key, value, shown):
    bounds = yaml.safe_load(DEFAULT_CONFIG.read_text())["captioner_quality"]
    with pytest.raises(ModelError) as err:
        require_quality(quality_checks(GOOD | {key: value}, bounds), "results/logs/evaluate_captioner.log")
    line = str(err.value)
    assert line.startswith("results/logs/evaluate_captioner.log: the trained captioner misses captioner_quality: ")
    assert shown in line and "\n" not in line
    assert line.count(" < ") + line.count(" > ") == 1  # only the missed bound
