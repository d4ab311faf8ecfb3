"""A fair comparison: every method's set and its random control are drawn and scored alike (issue 11)."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from kneurons.calibration import reference_scale
from kneurons.coco import image_records, load_coco, read_image
from kneurons.comparisons import PAIRWISE_COLUMNS, verdict
from kneurons.errors import DataError
from kneurons.figures import mean_map
from kneurons.generation import generate_captions
from kneurons.h5io import read_dump
from kneurons.io import write_tsv_rows
from kneurons.metrics import aggregate, table2
from kneurons.models import load_model
from kneurons.names import BASELINES
from kneurons.protocol import Captioning, Protocol
from kneurons.reporting import specificity_statement
from kneurons.rules.figures import dose_response
from kneurons.rules.neurons import neurons_baseline, neurons_control, neurons_ig_dai, neurons_ours
from kneurons.rules.perturb import noise_scale, reference_captions
from kneurons.samples import Candidate, write_tsv
from kneurons.tables import TABLE2_COLUMNS
from tests.conftest import PROMPT
from tests.helpers import forged_ids
from tests.test_storage import L, write_dumps


@pytest.fixture
def all_sets(tmp_path):
    """ours, the three baselines and their controls on two samples, the last layer excluded."""
    acts, cams = write_dumps(tmp_path, "full")
    dirs = {m: tmp_path / m for m in ("ours", *BASELINES)}
    dumps = {"activations": str(acts), "gradcam": str(cams)}
    neurons_ours(dumps, {"activation": "q0.8", "gradcam": "q0.3"}, True, str(dirs["ours"]))
    for m in BASELINES:
        neurons_baseline(m, str(dirs["ours"]), dumps, True, str(dirs[m]))
    for m in ("ours", *BASELINES):
        dirs[f"{m}_control"] = tmp_path / f"{m}_control"
        neurons_control(m, str(dirs[m]), {"gradcam": str(cams)}, str(dirs[f"{m}_control"]))
    return {m: [json.loads(p.read_text()) for p in sorted(d.glob("*.json"))] for m, d in dirs.items()}


def test_dai_selection_keeps_the_units_over_t_times_the_largest_ig(tmp_path):
    acts, cams = write_dumps(tmp_path, "full")
    dumps = {"activations": str(acts), "gradcam": str(cams)}
    neurons_ours(dumps, {"activation": "q0.8", "gradcam": "q0.3"}, True, str(tmp_path / "ours"))
    neurons_ig_dai(str(tmp_path / "ours"), dumps, 0.2, True, str(tmp_path / "ig_dai"))
    for path in sorted((tmp_path / "ig_dai").glob("*.json")):
        nset = json.loads(path.read_text())
        ig = read_dump(cams / path.name.replace(".json", ".h5"), ["ig"])[0]["ig"][: L - 1]  # the last layer excluded
        expected = {(int(a), int(b)) for a, b in zip(*np.nonzero(ig > 0.2 * ig.max()), strict=True)}
        assert expected and {(n[0], n[1]) for n in nset["neurons"]} == expected
        assert nset["size"] == len(expected) and nset["threshold"]["share_of_max"] == 0.2


def test_controls_have_their_methods_layer_counts_and_nothing_uses_the_last_layer(all_sets):
    for method in ("ours", *BASELINES):
        for nset, control in zip(all_sets[method], all_sets[f"{method}_control"], strict=True):
            assert nset["size"] > 0 and control["control_of"] == method
            assert control["layer_counts"] == nset["layer_counts"]
            assert {tuple(n[:2]) for n in control["neurons"]} != {tuple(n[:2]) for n in nset["neurons"]}
    for kind, sets in all_sets.items():
        for nset in sets:
            assert nset["layer_counts"][L - 1] == 0, kind
            assert all(layer < L - 1 for layer, _, _ in nset["neurons"]), kind
    # controls of different methods are drawn independently
    assert all_sets["ours_control"][0]["seed"] != all_sets["pan_control"][0]["seed"]


def test_pan_takes_last_layer_neurons_unless_excluded(tmp_path):
    acts, cams = write_dumps(tmp_path, "full")
    dumps = {"activations": str(acts), "gradcam": str(cams)}
    neurons_ours(dumps, {"activation": "q0.8", "gradcam": "q0.3"}, True, str(tmp_path / "ours"))
    counts = {}
    for exclude in (False, True):
        out = tmp_path / f"pan_{exclude}"
        neurons_baseline("pan", str(tmp_path / "ours"), dumps, exclude, str(out))
        counts[exclude] = [json.loads(p.read_text())["layer_counts"][L - 1] for p in sorted(out.glob("*.json"))]
    assert sum(counts[False]) > 0 and sum(counts[True]) == 0


def test_reference_scale_is_the_median_neuron_of_the_mean_std():
    a = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    b = np.array([[3.0, 2.0, 1.0], [0.0, 1.0, 0.0]])
    # mean over images: [[2, 2, 2], [2, 3, 3]] -> median 2
    assert reference_scale([a, b]) == 2.0
    assert reference_scale([a]) == 3.5


def test_noise_scale(tmp_path):
    acts, _ = write_dumps(tmp_path, "compact")
    out = tmp_path / "scale.json"
    noise_scale("calibrated", [2, 10], [str(acts)], str(out))
    got = json.loads(out.read_text())
    assert got["images"] == 2 and 0.5 < got["reference_scale"] < 1.5  # N(0, 1) activations
    assert got["noise_sd"] == pytest.approx([2 * got["reference_scale"], 10 * got["reference_scale"]])
    noise_scale("absolute", [40], [], str(out))
    assert json.loads(out.read_text())["reference_scale"] == 1.0
    with pytest.raises(DataError, match="no activation dump"):
        noise_scale("calibrated", [40], [str(tmp_path / "empty")], str(out))


def _lines(method, k, set_id, level, own_mentions, other_mentions):
    """Caption lines of one set at one level: k's images (mentions k or not) and the other images."""
    base = {"method": method, "knowledge": k, "set": set_id, "level": level, "seed": 0, "mentions_target": False}
    own = [base | {"image_knowledge": k, "mentions": m, "image_has_target": True} for m in own_mentions]
    other = [base | {"image_knowledge": "x", "mentions": m, "image_has_target": False} for m in other_mentions]
    return own + other


def test_margins_are_paired_by_set_and_knowledge_is_averaged_first():
    lines = (
        # bear: two sets; ours suppresses bear on set 1 (S_se 1) and half on set 2; the control never
        _lines("ours", "bear", 1, 20.0, [False], [True])
        + _lines("ours", "bear", 2, 20.0, [False, True], [True, False])
        + _lines("ours_control", "bear", 1, 20.0, [True], [True])
        + _lines("ours_control", "bear", 2, 20.0, [True, True], [True, True])
        # bus: one set, nothing suppressed, the control loses retention
        + _lines("ours", "bus", 7, 20.0, [True], [True])
        + _lines("ours_control", "bus", 7, 20.0, [True], [False])
        + _lines("none", "bear", 0, "none", [True], [True])
    )
    rows = {(r["method"], r["knowledge"], r["level"]): r for r in table2(lines, n_boot=500)}
    bear = rows[("ours", "bear", 20.0)]
    assert bear["S_se"] == pytest.approx(0.75) and bear["dS_se"] == pytest.approx(0.75)
    assert bear["S_re"] == pytest.approx(0.75) and bear["dS_re"] == pytest.approx(-0.25)
    assert bear["dS_mean"] == pytest.approx(0.25) and bear["sets"] == 2
    overall = rows[("ours", "all", 20.0)]
    # knowledge first: (0.75 + 0) / 2, not the mean of the three sets (0.5)
    assert overall["S_se"] == pytest.approx(0.375) and overall["sets"] == 3
    assert overall["dS_se"] == pytest.approx(0.375)  # bear 0.75, bus 0
    assert overall["dS_re"] == pytest.approx((-0.25 + 1.0) / 2)
    assert overall["dS_se_lo"] <= overall["dS_se"] <= overall["dS_se_hi"]
    assert math.isnan(rows[("ours_control", "all", 20.0)]["dS_se"])  # a control has no control
    ref = rows[("none", "all", "none")]
    assert ref["S_se"] == 0.0 and ref["S_re"] == 1.0
    # level "all" is the mean over the noise levels only
    assert rows[("ours", "all", "all")]["S_se"] == pytest.approx(0.375)


def test_bootstrap_interval_is_stratified_and_reproducible():
    per_set = {("m", k, s, 1.0): {"x": float(v)} for k, vals in {"a": [0, 1, 1, 0], "b": [5, 5]}.items()
               for s, v in enumerate(vals)}  # fmt: skip
    first, again = aggregate(per_set, ["x"], n_boot=300), aggregate(per_set, ["x"], n_boot=300)
    assert first == again
    overall = next(r for r in first if r["knowledge"] == "all" and r["level"] == 1.0)
    assert overall["x"] == pytest.approx(2.75)  # (0.5 + 5) / 2
    # b's sets are all 5, so every resample lies in [2.5, 3]
    assert 2.5 <= overall["x_lo"] <= overall["x"] <= overall["x_hi"] <= 3.0


def test_no_perturbation_reference_equals_plain_captioning(tmp_path, tiny_split, tiny_model_dir):
    records = [r for r in image_records(load_coco(tiny_split[0]), tiny_split[1]) if r.annotations][:3]
    loaded = load_model(tiny_model_dir)
    captions = [f"a {r.annotations[0].category} ." for r in records]
    rows = [Candidate(r.annotations[0].category, r.id, "x", caption=c, inpainted_caption="y", status="selected",
                      caption_ids=forged_ids(loaded.processor.tokenizer, c))
            for r, c in zip(records, captions, strict=True)]  # fmt: skip
    write_tsv(tmp_path / "selected.tsv", rows)
    out = tmp_path / "reference.jsonl"
    reference_captions(loaded, str(tiny_split[0]), str(tiny_split[1]), str(tmp_path / "selected.tsv"),
                       Protocol((1.0,), 1), Captioning(PROMPT, {}, max_new_tokens=12, batch_size=2),
                       str(out))  # fmt: skip
    lines = [json.loads(ln) for ln in out.read_text().splitlines()]
    targets = sorted({r.knowledge for r in rows})
    assert len(lines) == len(targets) * len(rows)
    assert {ln["method"] for ln in lines} == {"none"} and {ln["level"] for ln in lines} == {"none"}
    by_id = {r.id: read_image(r.path) for r in records}
    one_by_one = {i: generate_captions(loaded, [by_id[i]], PROMPT, max_new_tokens=12, batch_size=1)[0] for i in by_id}
    for ln in lines:
        assert ln["caption"] == one_by_one[ln["image_id"]]


def test_dose_response_figure_and_statement(tmp_path):
    def row(method, level, s_se, s_re, d=None):
        r = dict.fromkeys(TABLE2_COLUMNS, "")
        r |= {"method": method, "knowledge": "all", "level": level, "sets": "3"}
        for m, v in (("S_se", s_se), ("S_re", s_re), ("S_mean", (s_se + s_re) / 2), ("S_hal", 0.0)):
            r |= {m: v, f"{m}_lo": v - 0.05, f"{m}_hi": v + 0.05}
        for m in ("dS_se", "dS_re", "dS_mean"):
            v = d if d is not None else float("nan")
            r |= {m: v, f"{m}_lo": v - 0.02, f"{m}_hi": v + 0.02}
        return r

    rows = [
        row("none", "none", 0.0, 1.0),
        row("ours", 5.0, 0.1, 0.95, d=0.10),
        row("ours_control", 5.0, 0.0, 1.0),
        row("pan", 5.0, 0.02, 0.99, d=0.01),
        row("pan_control", 5.0, 0.0, 1.0),
        row("ours", "ablation", 0.2, 0.9, d=0.0),
        row("ours_control", "ablation", 0.0, 1.0),
        row("pan", "ablation", 0.1, 0.95, d=0.05),
        row("pan_control", "ablation", 0.0, 1.0),
    ]

    def pair(comparison, level, lo, hi):
        r = dict.fromkeys(PAIRWISE_COLUMNS, "") | {"comparison": comparison, "knowledge": "all", "level": level}
        for m in ("S_mean", "S_rest"):
            r |= {m: (lo + hi) / 2, f"{m}_lo": lo, f"{m}_hi": hi}
        return r | {"verdict": verdict(r | {"method": comparison})}

    pairs = [pair("ours − pan", 5.0, 0.02, 0.1), pair("ours − pan", "ablation", -0.1, 0.05)]
    pairs.append(pair("ours − pan", "restore", 0.1, 0.2))  # restoration is not a perturbation's specificity
    statement = specificity_statement(rows, pairs)
    paired, beyond, _ = statement.split(". ")
    assert paired.endswith(": 5: ours − pan +0.060 [+0.020, +0.100] ours more specific; "
                           "ablation: ours − pan -0.025 [-0.100, +0.050] not separable")  # fmt: skip
    assert beyond.endswith(": ours at 5; pan at ablation")  # pan's 0.01 ± 0.02 at level 5 is not above 0
    assert "5: ours +0.100 > pan +0.010" in statement
    csv_path, pairs_path = tmp_path / "table2.csv", tmp_path / "pairwise.csv"
    write_tsv_rows(csv_path, rows, TABLE2_COLUMNS, delimiter=",")
    write_tsv_rows(pairs_path, pairs, PAIRWISE_COLUMNS, delimiter=",")
    dose_response(str(csv_path), str(pairs_path), str(tmp_path / "dose.png"), str(tmp_path / "dose.md"))
    img = cv2.imread(str(tmp_path / "dose.png"))
    assert img is not None and img.shape[0] > 300
    assert statement in (tmp_path / "dose.md").read_text()


def test_mean_map_averages_traces_over_each_tokens_region():
    traces = [np.array([0.0, 2.0, 4.0, 6.0, 9.0]), np.array([2.0, 2.0, 2.0, 2.0, 3.0])]
    # a 2 x 2 grid over an 8 x 8 image, then a token over the top-left 4 x 4 block again, then one without pixels
    regions = np.array([[0, 0, 4, 4], [4, 0, 8, 4], [0, 4, 4, 8], [4, 4, 8, 8], [0, 0, 4, 4]], dtype=np.float64)
    regions = np.vstack([regions, [[np.nan] * 4]])
    traces = [np.append(t, 100.0) for t in traces]
    got = mean_map(traces, regions, (8, 8))
    assert got.shape == (8, 8)
    assert got[0, 0] == pytest.approx((1.0 + 6.0) / 2)  # the two tokens over that pixel, averaged
    assert got[0, 7] == pytest.approx(2.0) and got[7, 0] == pytest.approx(3.0) and got[7, 7] == pytest.approx(4.0)
    assert np.isfinite(got).all() and got.max() < 100  # the token without pixels is drawn nowhere
    assert len(np.unique(got)) == 4
