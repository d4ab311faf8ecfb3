"""Degenerate data in the tables: a target without samples and empty neuron sets are reported, not crashed on."""

from __future__ import annotations

import json
import math

import numpy as np

from kneurons.coco import image_records, load_coco
from kneurons.dumpstats import activation_record, gradcam_record
from kneurons.h5io import write_dump
from kneurons.io import read_tsv_rows, write_tsv_rows
from kneurons.models import load_model
from kneurons.protocol import Captioning, Protocol
from kneurons.rules.neurons import neurons_ours
from kneurons.rules.perturb import load_samples, necessity, table2
from kneurons.samples import Candidate, write_tsv
from tests.conftest import PROMPT
from tests.helpers import forged_ids


def strict_json(text: str) -> dict:
    def refuse(constant: str):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(text, parse_constant=refuse)


def test_thresholds_that_select_nothing_give_a_recorded_empty_set(tmp_path):
    acts, cams, out = tmp_path / "acts", tmp_path / "cams", tmp_path / "ours"
    acts.mkdir()
    cams.mkdir()
    orig = np.ones((2, 4, 8), np.float32)
    attrs = {"knowledge": "bear", "image_id": 1}
    write_dump(acts / "1.h5", activation_record(orig, orig * 0.5, "full", 0.1), attrs)
    write_dump(cams / "1.h5", gradcam_record(orig, np.ones((2, 8), np.float32), "full", orig), attrs)
    neurons_ours(
        {"activations": str(acts), "gradcam": str(cams)}, {"activation": 100.0, "gradcam": "q0.5"}, False, str(out)
    )
    nset = strict_json((out / "1.json").read_text())
    assert nset["size"] == 0 and nset["neurons"] == [] and nset["candidates"] == 0
    assert nset["thresholds"]["activation_value"] == 100.0 and nset["thresholds"]["gradcam_value"] is None


def test_an_empty_set_is_recorded_by_perturb_and_not_captioned(tmp_path, tiny_split, tiny_model_dir):
    record = next(r for r in image_records(load_coco(tiny_split[0]), tiny_split[1]) if r.annotations)
    k = record.annotations[0].category
    loaded = load_model(tiny_model_dir)
    ids = forged_ids(loaded.processor.tokenizer, f"a {k} .")
    write_tsv(tmp_path / "selected.tsv", [Candidate(k, record.id, "x", caption=f"a {k} .", status="selected",
                                                    caption_ids=ids)])  # fmt: skip
    sets = tmp_path / "sets"
    sets.mkdir()
    empty = {"method": "ours", "knowledge": k, "image_id": record.id, "size": 0, "layer_counts": [0, 0], "neurons": []}
    (sets / f"{record.id}.json").write_text(json.dumps(empty))
    out = tmp_path / "p.jsonl"
    protocol = Protocol((40.0,), 2)
    captioning = Captioning(PROMPT)
    d = load_samples(loaded, str(tiny_split[0]), str(tiny_split[1]), str(tmp_path / "selected.tsv"), captioning,
                     protocol)  # fmt: skip
    necessity(loaded, d, {"ours": str(sets)}, 1.0, protocol, captioning, out_jsonls={"ours": str(out)})
    lines = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert lines == [{"method": "ours", "knowledge": k, "set": record.id, "set_size": 0, "empty": True}]


def test_table2_reports_targets_without_samples_and_empty_sets(tmp_path):
    knowledge = tmp_path / "knowledge.tsv"
    write_tsv_rows(
        knowledge,
        [{"name": n, "slug": n, "supercategory": "x", "images": 3} for n in ("bear", "bus", "giraffe")],
        ["name", "slug", "supercategory", "images"],
    )
    samples = tmp_path / "selected.tsv"
    write_tsv(
        samples,
        [
            Candidate("bear", 2, "x", status="selected"),
            Candidate("bus", 5, "x", status="rejected", reason="k not in caption"),
        ],
    )
    base = {"knowledge": "bear", "set": 2, "image_id": 2, "image_knowledge": "bear", "image_has_target": True}
    lines = [
        base | {"method": "ours", "level": 4, "seed": s, "mentions": s == 0, "mentions_target": s == 0} for s in (0, 1)
    ] + [{"method": "ours_control", "knowledge": "bear", "set": 2, "set_size": 0, "empty": True}]
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text("".join(json.dumps(x) + "\n" for x in lines))
    table2([str(jsonl)], str(knowledge), str(samples), str(tmp_path / "t2.csv"), str(tmp_path / "t2.md"))

    rows = {(r["method"], r["knowledge"], r["level"]): r for r in read_tsv_rows(tmp_path / "t2.csv", delimiter=",")}
    assert float(rows[("ours", "bear", "4")]["S_se"]) == 0.5
    assert math.isnan(float(rows[("ours", "bear", "4")]["dS_se"]))  # no control line: no margin
    for method in ("ours", "ours_control"):
        bus = rows[(method, "bus", "all")]
        assert bus["sets"] == "0" and math.isnan(float(bus["S_mean"]))
        assert bus["note"] == "no sample passed the constraints (k not in caption: 1)"
        assert rows[(method, "giraffe", "all")]["note"] == "no sample passed the constraints (no candidate image)"
    control_bear = rows[("ours_control", "bear", "all")]
    assert control_bear["sets"] == "0" and control_bear["empty_sets"] == "1"
    assert "ours_control: 1 empty set(s)" in control_bear["note"]
    assert rows[("ours", "all", "all")]["empty_sets"] == "0"
    assert rows[("ours_control", "all", "all")]["empty_sets"] == "1"
    md = (tmp_path / "t2.md").read_text()
    assert "Notes" in md and "- bus: no sample passed the constraints" in md
