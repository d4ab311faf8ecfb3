"""Synthetic scenes: COCO-loadable, boxes cover their objects, byte-identical for one seed."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from kneurons.coco import image_records, load_coco, read_image
from kneurons.synth.scenes import BACKGROUNDS, CATEGORIES, render_scene, write_split


def test_categories_shape_the_data_set():
    assert len(CATEGORIES) >= 9
    assert len({c.supercategory for c in CATEGORIES}) >= 3
    assert any(" " in c.name for c in CATEGORIES)
    assert len({c.name for c in CATEGORIES}) == len(CATEGORIES)
    assert len(BACKGROUNDS) >= 3


def test_split_loads_through_pycocotools(tiny_split):
    coco = load_coco(tiny_split[0])
    assert len(coco.getImgIds()) == 12
    assert {c["name"] for c in coco.loadCats(coco.getCatIds())} == {c.name for c in CATEGORIES}
    records = image_records(coco, tiny_split[1])
    for rec in records:
        assert 1 <= len(rec.annotations) <= 3
        assert len({a.category for a in rec.annotations}) == len(rec.annotations)
        assert read_image(rec.path).shape == (rec.height, rec.width, 3)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=rec.id)):
            assert ann["area"] > 0 and ann["iscrowd"] == 0 and ann["segmentation"]
            # pycocotools turns the polygons into a mask whose pixels lie inside the box
            m = coco.annToMask(ann)
            x, y, w, h = (int(v) for v in ann["bbox"])
            assert m.sum() > 0 and m[y : y + h, x : x + w].sum() == m.sum()


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_every_box_covers_its_drawn_object(seed):
    scene = render_scene(np.random.default_rng(seed), 96, 3, 4)
    changed = np.any(scene.image != scene.background, axis=-1)
    inside = np.zeros_like(changed)
    for obj in scene.objects:
        x, y, w, h = obj.bbox
        ys, xs = np.nonzero(obj.mask)
        assert xs.min() == x and ys.min() == y and xs.max() == x + w - 1 and ys.max() == y + h - 1
        inside[y : y + h, x : x + w] = True
    # every pixel that differs from the background lies in some object's box
    assert changed.any() and not (changed & ~inside).any()


def test_boxes_do_not_overlap():
    for seed in range(10):
        scene = render_scene(np.random.default_rng(seed), 96, 3, 4)
        boxes = [o.bbox for o in scene.objects]
        for i, (x, y, w, h) in enumerate(boxes):
            for bx, by, bw, bh in boxes[i + 1 :]:
                assert x + w + 4 <= bx or bx + bw + 4 <= x or y + h + 4 <= by or by + bh + 4 <= y


def _digest(root):
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_gives_identical_bytes(tmp_path):
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        write_split(tmp_path / name / "i.json", tmp_path / name / "img", 6, seed, 48, 3, 2, 90)
    a, b, c = (_digest(tmp_path / n) for n in "abc")
    assert a == b
    assert a != c
