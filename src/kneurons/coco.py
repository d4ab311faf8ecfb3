"""COCO instances files through pycocotools, with one clear error line for bad input."""

from __future__ import annotations

import contextlib
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from pycocotools.coco import COCO

from kneurons.errors import DataError


@dataclass(frozen=True)
class Annotation:
    """One object instance: category name, COCO box [x, y, w, h] and segmentation (polygons or RLE)."""

    category: str
    bbox: tuple[float, float, float, float]
    segmentation: list | dict = field(default_factory=list)


@dataclass(frozen=True)
class ImageRecord:
    """One image of a COCO split: id, file path, size and its (non-crowd) annotations."""

    id: int
    path: Path
    height: int
    width: int
    annotations: tuple[Annotation, ...]
    extra: dict = field(default_factory=dict)


def load_coco(path: str | os.PathLike) -> COCO:
    """Load a COCO instances JSON with pycocotools (quietly); raise DataError naming the file if it is bad."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: COCO annotation file not found")
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO(str(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from e
    except (KeyError, TypeError, AssertionError) as e:
        raise DataError(f"{path}: not a COCO instances file (missing or bad key {e})") from e
    for key in ("images", "annotations", "categories"):
        if key not in coco.dataset:
            raise DataError(f"{path}: not a COCO instances file (missing key '{key}')")
    return coco


def image_records(coco: COCO, image_dir: str | os.PathLike) -> list[ImageRecord]:
    """All images of ``coco`` in id order with their non-crowd annotations, paths under ``image_dir``."""
    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    records = []
    for image_id in sorted(coco.getImgIds()):
        info = coco.imgs[image_id]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image_id, iscrowd=False))
        records.append(
            ImageRecord(
                id=image_id,
                path=Path(image_dir) / info["file_name"],
                height=int(info["height"]),
                width=int(info["width"]),
                annotations=tuple(
                    Annotation(names[a["category_id"]], tuple(float(v) for v in a["bbox"]), a.get("segmentation", []))
                    for a in sorted(anns, key=lambda a: (a["category_id"], a["id"]))
                ),
                extra={k: v for k, v in info.items() if k not in ("id", "file_name", "height", "width")},
            )
        )
    return records


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as (H, W, 3) RGB uint8; raise DataError naming the file if it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: image file not found")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DataError(f"{path}: image file is not a readable image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
