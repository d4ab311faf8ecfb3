"""COCO instances files through pycocotools, with one clear error line for bad input."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from pycocotools.coco import COCO

from kneurons.errors import DataError


@dataclass(frozen=True)
class Annotation:
    """One object instance: category name, COCO box [x, y, w, h], segmentation (polygons or RLE), whether it is a
    crowd region (iscrowd=1: an RLE over several instances) and its annotation id."""

    category: str
    bbox: tuple[float, float, float, float]
    segmentation: list | dict = field(default_factory=list)
    iscrowd: bool = False
    id: int = 0


@dataclass(frozen=True)
class ImageRecord:
    """One image of a COCO split: id, file path, size as annotated and its annotations, crowd regions included."""

    id: int
    path: Path
    height: int
    width: int
    annotations: tuple[Annotation, ...]
    extra: dict = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) as annotated."""
        return self.width, self.height


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _check_id(path: Path, what: str, value: object) -> None:
    """DataError unless ``value`` is an integer: pycocotools reads a string id as a sequence of characters, so
    "101" would silently match nothing."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise DataError(f"{path}: {what} {value!r} is a {type(value).__name__}, not an integer (COCO ids are integers)")


def _checked_polygons(seg: list, where: str) -> list:
    """``seg`` as a list of polygons (a flat [x1, y1, x2, y2, ...] list is wrapped, the one unambiguous repair);
    DataError naming the polygon and its value if one is not an even list of at least 3 points of numbers."""
    if seg and all(_is_number(v) for v in seg):
        logging.getLogger("kneurons").info("%s: flat polygon list wrapped as one polygon", where)
        seg = [seg]
    for i, poly in enumerate(seg):
        shown = str(poly)[:80]
        if not isinstance(poly, list) or not all(_is_number(v) for v in poly):
            raise DataError(f"{where}: segmentation polygon {i} is not a list of numbers: {shown}")
        if len(poly) % 2:
            raise DataError(
                f"{where}: segmentation polygon {i} has an odd number ({len(poly)}) of coordinates: {shown}"
            )
        if len(poly) < 6:
            raise DataError(f"{where}: segmentation polygon {i} has {len(poly) // 2} point(s), fewer than 3: {shown}")
    return seg


_RLE_CHARS = frozenset(chr(c) for c in range(48, 48 + 64))  # pycocotools' compressed RLE alphabet


def _check_rle(seg: dict, where: str, height: int, width: int) -> None:
    """DataError naming the key and value of a malformed RLE (size checked by the caller)."""
    counts = seg.get("counts")
    if isinstance(counts, str):
        bad = sorted(set(counts) - _RLE_CHARS)
        if bad or not counts:
            raise DataError(f"{where}: segmentation counts is not a compressed RLE string (characters {bad[:5]})")
    elif isinstance(counts, list):
        if not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in counts):
            raise DataError(f"{where}: segmentation counts {str(counts)[:80]} are not non-negative integers")
        if sum(counts) != height * width:
            raise DataError(
                f"{where}: segmentation counts sum to {sum(counts)} pixels, not height x width = {height * width}"
            )
    else:
        raise DataError(f"{where}: segmentation counts {str(counts)[:80]} is neither an RLE string nor a list")


def _check_dataset(path: Path, data: dict) -> None:
    """DataError naming the file, the image or annotation id, the key and the value of the first problem pycocotools
    would not report clearly (or would merge silently: duplicate image ids, string ids). A flat polygon list is
    wrapped in place (logged)."""
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise DataError(f"{path}: not a COCO instances file (missing key '{key}')")
    images: dict = {}
    for info in data["images"]:
        for key in ("id", "file_name", "height", "width"):
            if key not in info:
                raise DataError(f"{path}: image {info.get('id', '?')} has no '{key}'")
        _check_id(path, "image id", info["id"])
        if info["id"] in images:
            raise DataError(
                f"{path}: image id {info['id']} is used twice ({images[info['id']]['file_name']} and "
                f"{info['file_name']}); pycocotools would keep only the last"
            )
        images[info["id"]] = info
    for cat in data["categories"]:
        for key in ("id", "name"):
            if key not in cat:
                raise DataError(f"{path}: category {cat.get('id', cat.get('name', '?'))} has no '{key}'")
        _check_id(path, f"category {cat['name']!r} id", cat["id"])
    categories = {c["id"] for c in data["categories"]}
    for ann in data["annotations"]:
        where = f"{path}: annotation {ann.get('id', '?')}"
        for key in ("id", "image_id", "category_id", "bbox", "iscrowd"):
            if key not in ann:
                raise DataError(f"{where} has no '{key}'")
        for key in ("id", "image_id", "category_id"):
            _check_id(path, f"annotation {ann['id']!r} {key}", ann[key])
        if ann["category_id"] not in categories:
            raise DataError(f"{where}: category_id {ann['category_id']} is not a category of the file")
        if ann["image_id"] not in images:
            raise DataError(f"{where}: image_id {ann['image_id']} is not an image of the file")
        box = ann["bbox"]
        if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, int | float) for v in box)):
            raise DataError(f"{where}: bbox {box} is not [x, y, width, height]")
        seg, info = ann.get("segmentation"), images[ann["image_id"]]
        if isinstance(seg, dict):
            if list(seg.get("size", [])) != [info["height"], info["width"]]:
                raise DataError(
                    f"{where}: segmentation size {seg.get('size')} differs from image {ann['image_id']}'s "
                    f"[height, width] = [{info['height']}, {info['width']}]"
                )
            _check_rle(seg, where, info["height"], info["width"])
        elif isinstance(seg, list):
            ann["segmentation"] = _checked_polygons(seg, where)
        elif seg is not None:
            raise DataError(f"{where}: segmentation {str(seg)[:80]} is neither polygons (a list) nor an RLE (a dict)")


def load_coco(path: str | os.PathLike) -> COCO:
    """Load a COCO instances JSON with pycocotools (quietly); raise DataError naming the file (and the image or
    annotation at fault) if it is bad."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: COCO annotation file not found")
    try:
        data = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise DataError(f"{path}: not a COCO instances file (a JSON object expected)")
    _check_dataset(path, data)
    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def image_records(coco: COCO, image_dir: str | os.PathLike) -> list[ImageRecord]:
    """All images of ``coco`` in id order with their annotations (crowd regions too), paths under ``image_dir``."""
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    records = []
    for image_id in sorted(coco.getImgIds()):
        info = coco.imgs[image_id]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id))
        records.append(
            ImageRecord(
                id=image_id,
                path=Path(image_dir) / info["file_name"],
                height=int(info["height"]),
                width=int(info["width"]),
                annotations=tuple(
                    Annotation(
                        names[a["category_id"]],
                        tuple(float(v) for v in a["bbox"]),
                        a.get("segmentation", []),
                        bool(a["iscrowd"]),
                        int(a["id"]),
                    )
                    for a in sorted(anns, key=lambda a: (a["category_id"], a["id"]))
                ),
                extra={k: v for k, v in info.items() if k not in ("id", "file_name", "height", "width")},
            )
        )
    return records


def read_image(path: str | os.PathLike, size: tuple[int, int] | None = None, image_id: int | None = None) -> np.ndarray:
    """Read an image file as (H, W, 3) RGB uint8, pixels as stored (EXIF orientation ignored: COCO boxes are drawn
    on the stored pixels); grayscale and RGBA files become RGB. DataError naming the file if it is missing or
    unreadable, or if ``size`` = (height, width) from the annotations differs from the file's."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if bgr is None:
        raise DataError(f"{path}: image file is not a readable image")
    if size is not None and bgr.shape[:2] != tuple(size):
        raise DataError(
            f"{path} (image {image_id}): the file is {bgr.shape[1]}x{bgr.shape[0]} (width x height) but the "
            f"annotations say {size[1]}x{size[0]}"
        )
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_record(record: ImageRecord) -> np.ndarray:
    """The pixels of a COCO image, checked against its annotated size (``read_image``)."""
    return read_image(record.path, (record.height, record.width), record.id)


def records_by_id(annotations: str | os.PathLike, images: str | os.PathLike) -> dict[int, ImageRecord]:
    """The images of a COCO split (``annotations`` JSON, ``images`` directory) by id."""
    return {r.id: r for r in image_records(load_coco(annotations), images)}
