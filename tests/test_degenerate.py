"""Degenerate data in the tables: a target without samples and empty neuron sets are reported, not crashed on."""

from __future__ import annotations

import json
import math

from kneurons.io import read_tsv_rows, write_tsv_rows
from kneurons.samples import Candidate, write_tsv
from kneurons.tables import table2_stage


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
    ] + [{"method": "random", "knowledge": "bear", "set": 2, "set_size": 0, "empty": True}]
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text("".join(json.dumps(x) + "\n" for x in lines))
    table2_stage([str(jsonl)], str(knowledge), str(samples), str(tmp_path / "t2.csv"), str(tmp_path / "t2.md"))

    rows = {(r["method"], r["knowledge"], r["level"]): r for r in read_tsv_rows(tmp_path / "t2.csv", delimiter=",")}
    assert float(rows[("ours", "bear", "4")]["S_se"]) == 0.5
    for method in ("ours", "random"):
        bus = rows[(method, "bus", "all")]
        assert bus["sets"] == "0" and math.isnan(float(bus["S_mean"]))
        assert bus["note"] == "no sample passed the constraints (k not in caption: 1)"
        assert rows[(method, "giraffe", "all")]["note"] == "no sample passed the constraints (no candidate image)"
    random_bear = rows[("random", "bear", "all")]
    assert random_bear["sets"] == "0" and random_bear["empty_sets"] == "1"
    assert "random: 1 empty set(s)" in random_bear["note"]
    assert rows[("ours", "all", "all")]["empty_sets"] == "0" and rows[("random", "all", "all")]["empty_sets"] == "1"
    md = (tmp_path / "t2.md").read_text()
    assert "Notes" in md and "- bus: no sample passed the constraints" in md
