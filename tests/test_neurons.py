"""Stage 1, stage 2 and the baseline scores on hand-made (L, P, d_ff) arrays."""

from __future__ import annotations

import numpy as np
import pytest

from kneurons.neurons import (
    NeuronSet,
    activation_difference,
    candidates,
    final_set,
    pan_scores,
    random_neurons,
    resolve_threshold,
    schwettmann_scores,
    shared_units,
    top_neurons,
)

# L=2 layers, P=3 patches, d_ff=4 units
ORIG = np.array(
    [
        [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0], [0.0, 0.0, 0.0, 0.0]],
        [[0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.5], [0.0, 0.0, 0.0, 0.0]],
    ],
    dtype=np.float16,
)
INP = np.zeros_like(ORIG)
INP[0, 2, 3] = 5.0  # unit (0, 3) is *higher* after inpainting: a negative difference


def test_activation_difference_and_stage_one():
    v = activation_difference(ORIG, INP)
    assert v.dtype == np.float32 and v.shape == (2, 3, 4)
    c = candidates(v, 0.9)
    # max over patches > 0.9: (0,0)=1, (0,2)=3, (1,1)=2; (1,3)=0.5 is below, (0,3)=-5 is negative
    assert {tuple(x) for x in np.argwhere(c)} == {(0, 0), (0, 2), (1, 1)}
    assert {tuple(x) for x in np.argwhere(candidates(v, 0.9, exclude_layers=(1,)))} == {(0, 0), (0, 2)}
    # strictly greater: a neuron exactly at the threshold is not a candidate
    assert not candidates(v, 3.0)[0, 2]


def test_stage_two_keeps_candidates_with_high_gradcam():
    c = np.zeros((2, 4), bool)
    c[0, 0] = c[0, 2] = c[1, 1] = True
    g = np.zeros((2, 3, 4), np.float32)
    g[0, 1, 0] = 0.002  # candidate, above
    g[0, 0, 2] = 0.0001  # candidate, below
    g[1, 2, 1] = 0.0005  # candidate, above
    g[1, 0, 3] = 0.9  # not a candidate: never in N_k
    n = final_set(c, g, 0.0003)
    assert {tuple(x) for x in np.argwhere(n)} == {(0, 0), (1, 1)}


def test_baseline_scores_average_over_patches():
    g = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    s = schwettmann_scores(g)
    assert s.shape == (2, 4)
    assert s[1, 2] == pytest.approx((14 + 18 + 22) / 3)
    d = np.array([[1.0, -1.0, 2.0, 0.0], [0.5, 1.0, 1.0, 3.0]], np.float32)
    p = pan_scores(ORIG, d)
    assert p[0, 2] == pytest.approx(3.0 / 3 * 2.0)
    assert p[1, 1] == pytest.approx(2.0 / 3 * 1.0)
    assert p[0, 1] == 0.0


def test_top_neurons_and_ties():
    s = np.array([[0.1, 0.9, 0.5, 0.9], [0.7, 0.2, 0.0, -1.0]])
    top = top_neurons(s, 3)
    assert {tuple(x) for x in np.argwhere(top)} == {(0, 1), (0, 3), (1, 0)}
    assert top_neurons(s, 0).sum() == 0
    assert top_neurons(s, 100).sum() == 8
    assert {tuple(x) for x in np.argwhere(top_neurons(s, 2, exclude_layers=(0,)))} == {(1, 0), (1, 1)}


def test_neuron_set_orders_by_score():
    s = np.array([[0.1, 0.9, 0.5], [0.7, 0.2, 0.0]])
    mask = np.array([[True, True, False], [True, False, False]])
    ns = NeuronSet.from_mask(mask, s)
    assert [(layer, i) for layer, i, _ in ns.neurons] == [(0, 1), (1, 0), (0, 0)]
    assert ns.layer_counts(2) == [2, 1] and len(ns) == 3


def test_thresholds_absolute_or_quantile():
    values = np.arange(101, dtype=np.float32)
    assert resolve_threshold(1.5, values) == 1.5
    assert resolve_threshold("q0.9", values) == pytest.approx(90.0)
    assert resolve_threshold("q1", values) == pytest.approx(100.0)
    assert resolve_threshold("q0.5", np.array([])) == float("inf")
    with pytest.raises(ValueError, match=r"q0\.99"):
        resolve_threshold("top10", values)


def test_random_neurons_match_layer_counts_and_seed():
    a = random_neurons([3, 0, 5], 16, seed=7)
    assert a.shape == (3, 16) and a.sum(axis=1).tolist() == [3, 0, 5]
    assert np.array_equal(a, random_neurons([3, 0, 5], 16, seed=7))
    assert not np.array_equal(a, random_neurons([3, 0, 5], 16, seed=8))


def test_an_automatic_gradcam_threshold_is_floored_at_zero():
    from kneurons.neuronsets import two_stage

    # every neuron of layer 0 is a candidate (max_p V 1 against 0 elsewhere); their max_p g: three negative, one
    # positive, so their median, the q0.5 threshold, is -1.5: floored at 0, only the positive one passes
    v_max = np.array([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    g_max = np.array([[-3.0, -2.0, -1.0, 0.5], [9.0, 9.0, 9.0, 9.0]])
    cand, final, t_a, t_g, _ = two_stage(v_max, g_max, {"activation": 0.5, "gradcam": "q0.5"}, False)
    assert cand[0].all() and not cand[1].any() and t_a == 0.5
    assert t_g == 0.0
    assert final.tolist() == [[False, False, False, True], [False] * 4]
    # all negative: no neuron at all, not the "upper half" of neurons that lower y_c
    _, none, _, t_g, _ = two_stage(v_max, np.full_like(g_max, -1.0), {"activation": 0.5, "gradcam": "q0.5"}, False)
    assert t_g == 0.0 and not none.any()
    # an absolute threshold is the user's own choice: used as given, negative or not
    _, given, _, t_g, _ = two_stage(v_max, g_max, {"activation": 0.5, "gradcam": -2.5}, False)
    assert t_g == -2.5 and given[0].tolist() == [False, True, True, True]


def test_the_stage1_control_draws_n_k_units_from_the_candidates_only():
    """|N_k| units of C^k (recomputed from max_p V with ours' activation threshold), drawn by a seed of knowledge
    and image: every unit a candidate, as many as N_k, the same on a second draw, another draw for another image;
    a dump that disagrees with the recorded candidate count is an error."""
    from kneurons.neuronsets import ours_set, stage1_set, two_stage

    rng = np.random.default_rng(3)
    v_max = rng.uniform(0, 1, (3, 40))
    v_max[1, :10] += 5.0  # layer 1's first ten units: the only candidates
    g_max = rng.uniform(-1, 1, (3, 40))
    thresholds = {"activation": 3.0, "gradcam": "q0.5"}
    ours = ours_set(two_stage(v_max, g_max, thresholds, False), g_max, thresholds, "bear", 7)
    assert ours["candidates"] == 10 and 0 < ours["size"] < 10
    got = stage1_set(ours, v_max)
    units = {(layer, unit) for layer, unit, _ in got["neurons"]}
    assert len(units) == got["size"] == ours["size"]
    assert units <= {(1, u) for u in range(10)}
    assert got == stage1_set(ours, v_max)
    draws = {frozenset((n[0], n[1]) for n in stage1_set(ours | {"image_id": i}, v_max)["neurons"]) for i in range(8)}
    assert len(draws) > 1  # seeded by the image: not one fixed draw
    with pytest.raises(ValueError, match="candidates from the activation dump"):
        stage1_set(ours | {"candidates": 11}, v_max)


def test_shared_units_keep_what_enough_samples_share():
    sets = [
        [(0, 1, 0.9), (0, 2, 0.5), (1, 7, 0.1)],
        [(0, 1, 0.3), (1, 7, 0.2), (1, 7, 0.2)],
        [(0, 1, 0.1), (2, 4, 0.0)],
    ]
    assert shared_units(sets, 1.0) == [(0, 1, 1.0)]  # the intersection
    assert shared_units(sets, 2 / 3) == [(0, 1, 1.0), (1, 7, 2 / 3)]  # a duplicate within a set counts once
    assert shared_units(sets, 0.3) == [(0, 1, 1.0), (1, 7, 2 / 3), (0, 2, 1 / 3), (2, 4, 1 / 3)]
    assert shared_units(sets, 0.3, budget=2) == [(0, 1, 1.0), (1, 7, 2 / 3)]
    assert shared_units([], 0.5) == []
    with pytest.raises(ValueError, match="share must be in"):
        shared_units(sets, 0.0)


def test_a_control_drawn_outside_the_knowledges_units_matches_its_layers():
    exclude = np.zeros((3, 10), bool)
    exclude[0, :7] = exclude[2, 1] = True
    draws = [random_neurons([3, 2, 4], 10, seed, exclude=exclude) for seed in range(20)]
    for mask in draws:
        assert mask.sum(axis=1).tolist() == [3, 2, 4] and not (mask & exclude).any()
    assert len({m.tobytes() for m in draws}) > 1  # seeded draws differ
    assert np.array_equal(random_neurons([3, 2, 4], 10, 5, exclude=exclude), draws[5])  # and repeat
    assert np.array_equal(random_neurons([3, 2, 4], 10, 5), random_neurons([3, 2, 4], 10, 5, exclude=None))
    with pytest.raises(ValueError, match="layer 0: 4 units asked, 3 not excluded"):
        random_neurons([4, 0, 0], 10, 0, exclude=exclude)
