"""Knowledge targets and the paper's three selection constraints on hand-made captions."""

from __future__ import annotations

import pytest

from kneurons.coco import load_coco
from kneurons.errors import DataError
from kneurons.samples import Candidate, constraint_failure, reason_counts, resolve_knowledge, select_samples


def row(image_id, caption, inpainted, others="", covered=""):
    return Candidate("fire hydrant", image_id, f"{image_id}.png", others, covered, caption, inpainted)


def test_three_constraints():
    assert constraint_failure(row(1, "a field with a fire hydrant .", "a field .")) == ""
    assert constraint_failure(row(1, "a field with a bus .", "a field .")) == "k not in caption"
    assert constraint_failure(row(1, "a fire hydrant .", "two fire hydrants .")) == "k still present"
    r = row(1, "a fire hydrant and a bus .", "a field .", others="bus")
    assert constraint_failure(r) == "other object also removed: bus (caption)"
    r = row(1, "a fire hydrant and a bus .", "a bus .", others="bus", covered="bus")
    assert constraint_failure(r).startswith("other object also removed: bus")
    # another object the original caption never mentioned cannot be "removed" from it
    assert constraint_failure(row(1, "a fire hydrant .", "a field .", others="bus")) == ""
    # synonyms count as mentions
    assert constraint_failure(row(1, "a hydrant .", "a field ."), synonyms=["hydrant"]) == ""


def test_selection_takes_the_first_n_passing():
    rows = [
        row(5, "a fire hydrant .", "a field ."),
        row(2, "a bus .", "a field ."),
        row(3, "a fire hydrant .", "a field ."),
        row(9, "a fire hydrant .", "a field ."),
    ]
    judged = select_samples(rows, 2)
    expected = [(2, "rejected"), (3, "selected"), (5, "selected"), (9, "pending")]
    assert [(r.image_id, r.status) for r in judged] == expected
    assert judged[0].reason == "k not in caption"
    assert reason_counts(judged) == {"k not in caption": 1, "selected": 2, "passed; samples_per_knowledge reached": 1}


def test_resolve_knowledge(tiny_split):
    coco = load_coco(tiny_split[0])
    auto = resolve_knowledge(coco, "auto", "x.json", per_supercategory=1)
    assert len({t.supercategory for t in auto}) == len(auto) >= 1
    assert all(t.images > 0 for t in auto)
    named = resolve_knowledge(coco, ["fire hydrant"], "x.json")
    assert named[0].slug == "fire_hydrant" and named[0].supercategory == "outdoor"
    with pytest.raises(DataError, match=r"x\.json: knowledge 'unicorn' is not a category"):
        resolve_knowledge(coco, ["bear", "unicorn"], "x.json")
