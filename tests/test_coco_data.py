"""Real COCO data as a user brings it (issue 12): crowd regions, image size and orientation, duplicate ids, bad
annotations, odd category names, boxes on the edge, and annotation files without objects."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from kneurons.coco import image_records, load_coco, read_image
from kneurons.errors import DataError
from kneurons.samples import inpaint_candidates, resolve_knowledge, slug, unslug

H, W = 40, 60


def write_coco(root: Path, annotations: list[dict], images: list[dict] | None = None, categories=None) -> Path:
    """A COCO file over grey W×H JPEGs (one per image entry); returns its path."""
    (root / "images").mkdir(exist_ok=True)
    images = images or [{"id": 1, "file_name": "a.jpg", "height": H, "width": W}]
    for info in images:
        if not (root / "images" / info["file_name"]).exists():
            cv2.imwrite(
                str(root / "images" / info["file_name"]), np.full((info["height"], info["width"], 3), 128, np.uint8)
            )
    categories = categories or [{"id": 1, "name": "bear", "supercategory": "animal"},
                                {"id": 2, "name": "bus", "supercategory": "vehicle"}]  # fmt: skip
    path = root / "instances.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return path


def ann(ann_id: int, cat: int, bbox: list, iscrowd: int = 0, image_id: int = 1, **extra) -> dict:
    return {"id": ann_id, "image_id": image_id, "category_id": cat, "bbox": bbox, "iscrowd": iscrowd, "area": 1} | extra


def crowd_rle(compressed: bool) -> dict:
    """A crowd region over rows 5..15, columns 30..50 of the W×H image, as COCO stores it."""
    m = np.zeros((H, W), np.uint8, order="F")
    m[5:15, 30:50] = 1
    rle = mask_utils.encode(m)
    if compressed:
        return {"size": [H, W], "counts": rle["counts"].decode()}
    flat = m.flatten(order="F")  # uncompressed counts: run lengths starting with zeros
    changes = np.flatnonzero(np.diff(flat)) + 1
    counts = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
    return {"size": [H, W], "counts": counts}


@pytest.mark.parametrize("compressed", [True, False])
def test_a_crowd_region_of_k_is_inpainted_and_one_of_another_category_counts(tmp_path, compressed):
    path = write_coco(
        tmp_path,
        [
            ann(1, 1, [2, 2, 10, 10]),
            ann(2, 1, [30, 5, 20, 10], iscrowd=1, segmentation=crowd_rle(compressed)),
            ann(3, 2, [15, 20, 10, 10], iscrowd=1, segmentation=crowd_rle(True)),
        ],
    )
    image = tmp_path / "images" / "a.jpg"
    pixels = np.full((H, W, 3), 128, np.uint8)
    pixels[5:15, 30:50] = (250, 20, 20)  # the crowd of bears: must be gone after inpainting
    cv2.imwrite(str(image), pixels)
    records = image_records(load_coco(path), tmp_path / "images")
    assert [(a.category, a.iscrowd) for a in records[0].annotations] == [("bear", False), ("bear", True), ("bus", True)]
    rows = inpaint_candidates(records, "bear", tmp_path / "out", 5, source="segmentation")
    assert rows[0].others == "bus"
    out = cv2.imread(rows[0].inpainted)
    before = cv2.imread(str(image))
    assert np.abs(out[5:15, 30:50].astype(int) - before[5:15, 30:50]).mean() > 30  # the crowd region changed


def test_image_size_must_match_the_annotations_and_exif_orientation_is_ignored(tmp_path):
    path = write_coco(tmp_path, [ann(1, 1, [2, 2, 10, 10])])
    image = tmp_path / "images" / "a.jpg"
    cv2.imwrite(str(image), np.full((W, H, 3), 128, np.uint8))  # stored H×W swapped
    records = image_records(load_coco(path), tmp_path / "images")
    with pytest.raises(DataError, match=rf"a\.jpg \(image 1\): the file is {H}x{W} .* annotations say {W}x{H}"):
        inpaint_candidates(records, "bear", tmp_path / "out", 5)
    assert not (tmp_path / "out").exists()
    # A JPEG stored W×H whose EXIF says "rotate 90°": read as stored, as COCO's boxes are drawn.
    cv2.imwrite(str(image), np.full((H, W, 3), 128, np.uint8))
    data = image.read_bytes()
    ifd = b"MM\x00\x2a\x00\x00\x00\x08" + struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, 6, 0) + bytes(4)
    app1 = b"\xff\xe1" + struct.pack(">H", len(ifd) + 8) + b"Exif\x00\x00" + ifd
    image.write_bytes(data[:2] + app1 + data[2:])
    assert cv2.imread(str(image)).shape[:2] == (W, H)  # what a plain reader does: rotated
    assert read_image(image, (H, W), 1).shape[:2] == (H, W)


@pytest.mark.parametrize(
    ("annotations", "images", "message"),
    [
        ([ann(7, 1, [1, 1, 5, 5])] , [{"id": 1, "file_name": "a.jpg", "height": H, "width": W},
                                      {"id": 1, "file_name": "b.jpg", "height": H, "width": W}],
         "image id 1 is used twice (a.jpg and b.jpg)"),
        ([{k: v for k, v in ann(7, 1, [1, 1, 5, 5]).items() if k != "iscrowd"}], None,
         "annotation 7 has no 'iscrowd'"),
        ([ann(7, 77, [1, 1, 5, 5])], None, "annotation 7: category_id 77 is not a category of the file"),
        ([ann(7, 1, [1, 1, 5, 5], iscrowd=1, segmentation={"size": [10, 10], "counts": [0, 100]})], None,
         f"annotation 7: segmentation size [10, 10] differs from image 1's [height, width] = [{H}, {W}]"),
        ([ann(7, 1, [1, 1, 5])], None, "annotation 7: bbox [1, 1, 5] is not [x, y, width, height]"),
        # ids as strings (pycocotools would read "101" as a sequence of characters and find nothing)
        ([ann(7, 1, [1, 1, 5, 5], image_id="101")], [{"id": "101", "file_name": "a.jpg", "height": H, "width": W}],
         "image id '101' is a str, not an integer (COCO ids are integers)"),
        ([ann(7, 1, [1, 1, 5, 5], image_id="1")], None,
         "annotation 7 image_id '1' is a str, not an integer (COCO ids are integers)"),
        ([ann(7, 1, [1, 1, 5, 5])], None, "category 'bear' id '1' is a str, not an integer (COCO ids are integers)"),
        ([ann(7.0, 1, [1, 1, 5, 5])], None, "annotation 7.0 id 7.0 is a float, not an integer (COCO ids are integers)"),
        # malformed polygons and RLEs, named when the file is loaded (not inside the inpaint job)
        ([ann(7, 1, [1, 1, 5, 5], segmentation=[[1, 1, 5, 1, 5]])], None,
         "annotation 7: segmentation polygon 0 has an odd number (5) of coordinates: [1, 1, 5, 1, 5]"),
        ([ann(7, 1, [1, 1, 5, 5], segmentation=[[3, 3]])], None,
         "annotation 7: segmentation polygon 0 has 1 point(s), fewer than 3: [3, 3]"),
        ([ann(7, 1, [1, 1, 5, 5], segmentation=[[1, 1, 5, 1, 5, 5], [1, "x", 2, 2, 3, 3]])], None,
         "annotation 7: segmentation polygon 1 is not a list of numbers: [1, 'x', 2, 2, 3, 3]"),
        ([ann(7, 1, [1, 1, 5, 5], segmentation=[[[1, 1], [5, 1], [5, 5]]])], None,
         "annotation 7: segmentation polygon 0 is not a list of numbers: [[1, 1], [5, 1], [5, 5]]"),
        ([ann(7, 1, [1, 1, 5, 5], iscrowd=1, segmentation={"size": [H, W], "counts": [0, 100]})], None,
         f"annotation 7: segmentation counts sum to 100 pixels, not height x width = {H * W}"),
        ([ann(7, 1, [1, 1, 5, 5], iscrowd=1, segmentation={"size": [H, W], "counts": "ab~~ z"})], None,
         "annotation 7: segmentation counts is not a compressed RLE string (characters [' ', 'z', '~'])"),
        ([ann(7, 1, [1, 1, 5, 5], segmentation="1 1 5 5")], None,
         "annotation 7: segmentation 1 1 5 5 is neither polygons (a list) nor an RLE (a dict)"),
    ],
)  # fmt: skip
def test_bad_annotations_are_one_line_naming_what_is_at_fault(tmp_path, annotations, images, message):
    categories = None
    if message.startswith("category 'bear' id '1'"):
        categories = [{"id": "1", "name": "bear", "supercategory": "animal"}]
    path = write_coco(tmp_path, annotations, images, categories)
    with pytest.raises(DataError) as err:
        load_coco(path)
    assert str(err.value) == f"{path}: {message}" + (
        "; pycocotools would keep only the last" if "twice" in message else ""
    )


@pytest.mark.parametrize("name", ["fire hydrant", "teddy_bear", "crème brûlée", "t-shirt", "a+b", "R2 D2 (robot)"])
def test_slugs_map_back_to_the_exact_name(name):
    s = slug(name)
    assert unslug(s) == name
    assert all(c.isascii() and (c.isalnum() or c in "_+-") for c in s)


def test_slugs_of_distinct_names_differ():
    names = ["teddy bear", "teddy_bear", "teddy+bear", "teddy-bear"]
    assert len({slug(n) for n in names}) == len(names)


def test_a_box_slightly_past_the_edge_is_clipped_and_one_far_past_it_skips_that_candidate(tmp_path, caplog):
    images = [{"id": i, "file_name": f"{i}.jpg", "height": H, "width": W} for i in (1, 2, 3)]
    path = write_coco(
        tmp_path,
        [
            ann(1, 1, [W - 10, 5, 11.5, 10], image_id=1),  # 1.5 px past the right edge: clipped
            ann(2, 1, [W - 10, 5, 15, 10], image_id=2),  # 5 px past it: this candidate is skipped
            ann(3, 1, [5, 5, 0, 10], image_id=3),  # zero area: skipped
        ],
        images,
    )
    with caplog.at_level("INFO", logger="kneurons"):
        rows = inpaint_candidates(image_records(load_coco(path), tmp_path / "images"), "bear", tmp_path / "out", 5)
    assert [(r.image_id, r.status) for r in rows] == [(1, ""), (2, "rejected"), (3, "rejected")]
    clipped = [m for m in caplog.messages if "clipped" in m]  # the clip is logged, once, for image 1 only
    assert len(clipped) == 1 and re.fullmatch(rf"image 1: bear box \[.*\] clipped to the {W}x{H} image", clipped[0])
    assert Path(rows[0].inpainted).is_file() and rows[1].inpainted == ""
    assert rows[1].reason.startswith("bad box: bear box [x, y, w, h] = [50.0, 5.0, 15.0, 10.0] (annotation 2) lies")
    assert "has zero area" in rows[2].reason


def test_auto_knowledge_without_any_object_is_one_line(tmp_path):
    path = write_coco(tmp_path, [])
    with pytest.raises(DataError, match=r"knowledge auto found no category with an annotated object"):
        resolve_knowledge(load_coco(path), "auto", str(path))


def test_a_flat_polygon_list_is_wrapped_logged_and_masks_like_the_wrapped_one(tmp_path, caplog):
    polygon = [10.0, 5.0, 40.0, 5.0, 40.0, 30.0, 10.0, 30.0]
    flat = write_coco(tmp_path, [ann(7, 1, [10, 5, 30, 25], segmentation=polygon)])
    with caplog.at_level("INFO", logger="kneurons"):
        (record,) = image_records(load_coco(flat), tmp_path / "images")
    assert f"{flat}: annotation 7: flat polygon list wrapped as one polygon" in caplog.text
    assert record.annotations[0].segmentation == [polygon]
    rows = inpaint_candidates([record], "bear", tmp_path / "out", 5, source="segmentation")
    assert rows[0].inpainted  # inpainted with the repaired polygon, no error inside the inpaint job
