"""Removing an object from an image: a mask from its COCO box or segmentation, filled by cv2.inpaint (Telea)."""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from kneurons.coco import Annotation


def object_mask(ann: Annotation, height: int, width: int, source: str = "box", dilate: int = 0) -> np.ndarray:
    """The (H, W) uint8 mask (255 inside) of one annotation, from its box or its segmentation (polygons, or RLE
    compressed or not, as crowd regions are stored; an annotation without segmentation falls back to its box).

    ``dilate`` grows the mask by that many pixels on every side (a square structuring element).
    """
    if source not in ("box", "segmentation"):
        raise ValueError(f"mask source must be 'box' or 'segmentation', got {source!r}")
    if source == "box" or not ann.segmentation:
        x, y, w, h = ann.bbox
        mask = np.zeros((height, width), np.uint8)
        x0, y0 = int(np.floor(x)), int(np.floor(y))
        x1, y1 = int(np.ceil(x + w)), int(np.ceil(y + h))
        mask[max(0, y0) : min(height, y1), max(0, x0) : min(width, x1)] = 255
    else:
        seg = ann.segmentation
        rles = mask_utils.frPyObjects(seg, height, width) if isinstance(seg, list) else seg
        if isinstance(rles, dict) and isinstance(rles.get("counts"), list):
            rles = mask_utils.frPyObjects(rles, height, width)
        mask = (mask_utils.decode(mask_utils.merge(rles) if isinstance(rles, list) else rles) > 0).astype(
            np.uint8
        ) * 255
    return dilated(mask, dilate)


def dilated(mask: np.ndarray, dilate: int) -> np.ndarray:
    """An (H, W) uint8 mask grown by ``dilate`` pixels on every side (a square structuring element)."""
    return cv2.dilate(mask, np.ones((2 * dilate + 1, 2 * dilate + 1), np.uint8)) if dilate > 0 else mask


def inpaint_mask(image: np.ndarray, mask: np.ndarray, radius: int = 3) -> np.ndarray:
    """Fill the nonzero pixels of ``mask`` (H, W) in an (H, W, 3) uint8 image with cv2.INPAINT_TELEA, ``radius`` px."""
    return cv2.inpaint(np.ascontiguousarray(image), (mask > 0).astype(np.uint8) * 255, radius, cv2.INPAINT_TELEA)


def remove_objects(
    image: np.ndarray, anns: Iterable[Annotation], source: str = "box", dilate: int = 0, radius: int = 3
) -> np.ndarray:
    """Inpaint (cv2.INPAINT_TELEA, ``radius`` px) the given objects out of an (H, W, 3) uint8 image."""
    h, w = image.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    for ann in anns:
        mask |= object_mask(ann, h, w, source, dilate)
    return inpaint_mask(image, mask, radius)
