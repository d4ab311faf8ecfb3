"""Editing's sets, split and scores against hand-made answers: Dai et al.'s sharing rule over per-sample sets, controls
drawn outside every set of k with the set's per-layer counts, a split that never judges an image of D, k' of another
supercategory, text log p against a plain forward, and the editing table's scores, margins and verdicts computed by
hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kneurons.editscores import editing_rows, pairwise_rows
from kneurons.editsets import (
    DISCOVERY,
    HELDOUT,
    LOCALITY,
    draws_of,
    in_any_set,
    knowledge_controls,
    knowledge_set,
    rewrite_target,
    split,
)
from kneurons.names import ALL
from kneurons.samples import Candidate, Knowledge


def a_set(image_id: int, units: list[tuple[int, int]], n_layers: int = 3) -> dict:
    counts = [0] * n_layers
    for layer, _ in units:
        counts[layer] += 1
    return {"image_id": image_id, "layer_counts": counts, "neurons": [[lyr, u, 0.5] for lyr, u in units]}


SETS = [
    a_set(1, [(0, 1), (0, 2), (1, 3)]),
    a_set(2, [(0, 1), (1, 3), (2, 9)]),
    a_set(3, [(0, 1), (2, 5)]),
]


def test_a_knowledge_set_holds_the_units_a_share_of_the_samples_share():
    half = knowledge_set("ours", "bear", SETS, 0.5, None)
    assert half["neurons"] == [[0, 1, 1.0], [1, 3, pytest.approx(2 / 3)]]  # most shared first
    assert half["layer_counts"] == [1, 1, 0] and half["size"] == 2 and half["samples"] == [1, 2, 3]
    assert [n[:2] for n in knowledge_set("ours", "bear", SETS, 1.0, None)["neurons"]] == [[0, 1]]
    assert knowledge_set("ours", "bear", SETS, 0.3, None)["size"] == 5  # the union
    assert knowledge_set("ours", "bear", SETS, 0.3, 2)["size"] == 2  # the budget
    assert half["sizes_by_share"] == {"1/3": 5, "2/3": 2, "3/3": 1}


def test_controls_keep_the_layer_counts_and_never_draw_a_unit_of_any_set_of_k():
    shape = (3, 12)
    exclude = in_any_set(SETS, shape)
    shadowed = knowledge_set("ours", "bear", SETS, 0.3, None)  # 2, 1 and 2 units in layers 0, 1, 2
    controls = knowledge_controls(shadowed, exclude, draws=4)
    assert len(draws_of(controls)) == 4 and controls["neurons"] == controls["draws"][0]
    for units in draws_of(controls):
        counts = [sum(1 for lyr, _, _ in units if lyr == layer) for layer in range(3)]
        assert counts == shadowed["layer_counts"]
        assert not any(exclude[lyr, u] for lyr, u, _ in units)
    assert len({tuple(map(tuple, d)) for d in draws_of(controls)}) > 1  # draws differ
    assert knowledge_controls(shadowed, exclude, draws=4) == controls  # seeded


def candidate(k: str, image_id: int, others: str, caption: str, status: str = "") -> Candidate:
    return Candidate(k, image_id, f"{image_id}.png", others=others, caption=caption, status=status, caption_ids="5 6")


def test_the_split_never_judges_an_image_of_d_and_gives_each_image_its_reason():
    captioned = {
        "bear": [
            candidate("bear", 1, "", "a bear", "selected"),
            candidate("bear", 2, "cake", "a bear and a cake"),
            candidate("bear", 3, "", "a dog"),  # does not name bear: not held-out
            candidate("bear", 4, "", "two bears"),
            candidate("bear", 9, "", "a bear"),  # in D as cake's sample: never judged
        ],
        "cake": [
            candidate("cake", 2, "bear", "a bear and a cake"),  # has a bear: not locality for bear
            candidate("cake", 5, "", "a cake"),
            candidate("cake", 6, "horse", "a cake"),  # does not name its horse: not locality
            candidate("cake", 7, "horse", "a horse and a cake"),
            candidate("cake", 9, "bear", "a cake and a bear", "selected"),
        ],
    }
    d = [captioned["bear"][0]]
    rows = split("bear", d, captioned, {1, 9}, 5, 5, 0, {})
    by_role = {role: sorted(r.image_id for r in rows if r.role == role) for role in (DISCOVERY, HELDOUT, LOCALITY)}
    assert by_role == {DISCOVERY: [1], HELDOUT: [2, 4], LOCALITY: [5, 7]}
    assert all(r.reason for r in rows)
    assert next(r for r in rows if r.image_id == 7).objects == "cake,horse"
    few = split("bear", d, captioned, {1, 9}, 1, 1, 0, {})
    assert sum(r.role == HELDOUT for r in few) == 1 and sum(r.role == LOCALITY for r in few) == 1
    assert few == split("bear", d, captioned, {1, 9}, 1, 1, 0, {})  # seeded


def test_the_rewrite_goes_to_a_target_of_another_supercategory_unless_named():
    targets = [Knowledge("bear", "bear", "animal", 5), Knowledge("horse", "horse", "animal", 4),
               Knowledge("cake", "cake", "food", 3)]  # fmt: skip
    assert rewrite_target("bear", targets, {}) == "cake"
    assert rewrite_target("cake", targets, {}) == "bear"
    assert rewrite_target("bear", targets, {"bear": "horse"}) == "horse"
    assert rewrite_target("bear", targets[:1], {}) == ""


def test_text_logprobs_equal_a_plain_forward_one_text_at_a_time(tiny_model_dir):
    from kneurons.logprob import text_logprobs
    from kneurons.models import load_model

    loaded = load_model(tiny_model_dir, dtype="float32")
    texts = [[5, 9, 12, 7], [8, 6], [30, 31, 32, 33, 34, 35]]
    bos = loaded.processor.tokenizer.bos_token_id
    expected = []
    for t in texts:
        ids = torch.tensor([([bos] if bos is not None else []) + t])
        with torch.no_grad():
            logits = loaded.model(input_ids=ids).logits[0].float()
        steps = range(ids.shape[1] - 1)
        expected.append(np.mean([float(torch.log_softmax(logits[i], -1)[ids[0, i + 1]]) for i in steps]))
    got = text_logprobs(loaded, texts, batch_size=2)  # padded batches
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def per_image(values: dict[int, float]) -> dict[int, float]:
    return dict(values)


def components(erased_h, kept_l, erased_d=(1.0,)) -> dict[str, dict[int, float]]:
    return {
        "erased_h": dict(enumerate(erased_h)),
        "erased_d": {100 + i: v for i, v in enumerate(erased_d)},
        "kept_l": {200 + i: v for i, v in enumerate(kept_l)},
    }


def test_scores_margins_and_the_gap_are_the_means_a_hand_computation_gives():
    per = {
        ("ours", "bear", "erase", 0.0): components([1, 1, 0, 0], [1, 1, 1, 0]),
        ("ours_control", "bear", "erase", 0.0): components([0, 1, 0, 0], [1, 1, 1, 1]),
        ("ours", "cake", "erase", 0.0): components([1, 1, 1, 1], [1, 1, 1, 1], erased_d=(1.0, 1.0)),
        ("ours_control", "cake", "erase", 0.0): components([0, 0, 0, 0], [1, 1, 1, 1], erased_d=(0.0, 0.0)),
    }
    rows = {(r["method"], r["knowledge"]): r for r in editing_rows(per, {("ours", "bear"): 3, ("ours", "cake"): 5})}
    ours = rows[("ours", ALL)]
    assert ours["efficacy"] == pytest.approx((0.5 + 1.0) / 2)  # mean over targets of each target's mean
    assert ours["locality"] == pytest.approx((0.75 + 1.0) / 2)
    assert ours["gap"] == pytest.approx(((1 - 0.5) + (1 - 1.0)) / 2)
    assert ours["defficacy"] == pytest.approx(((0.5 - 0.25) + (1.0 - 0.0)) / 2)  # paired by image
    assert ours["dlocality"] == pytest.approx((-0.25 + 0.0) / 2)
    assert ours["E_mean"] == pytest.approx(((0.5 + 0.75) / 2 + (1.0 + 1.0) / 2) / 2)
    assert ours["units"] == 4.0 and rows[("ours", "bear")]["units"] == 3.0
    assert ours["efficacy_lo"] <= ours["efficacy"] <= ours["efficacy_hi"] and ours["efficacy_lo"] < ours["efficacy_hi"]
    assert rows[("ours", "cake")]["efficacy_lo"] == rows[("ours", "cake")]["efficacy_hi"] == 1.0  # nothing varies
    assert np.isnan(rows[("ours_control", ALL)]["defficacy"])  # a control has no control


def test_pairwise_verdicts_follow_the_interval_of_the_paired_difference():
    strong = components([1] * 8, [1] * 8)
    weak = components([0] * 8, [1] * 8)
    per = {
        ("ours", "bear", "erase", 0.0): strong,
        ("pan", "bear", "erase", 0.0): weak,
        ("schwettmann", "bear", "erase", 0.0): strong,
    }
    verdicts = {r["comparison"]: r["verdict"] for r in pairwise_rows(per) if r["knowledge"] == ALL}
    assert verdicts == {
        "ours − schwettmann": "not separable",
        "ours − pan": "ours more specific",
        "schwettmann − pan": "schwettmann more specific",
    }
