"""Synthetic COCO-format scenes: cv2-drawn object sprites on textured backgrounds.

Every scene is an RGB uint8 image (H, W, 3) with 1..max_objects objects of distinct categories whose boxes do
not overlap (a margin apart), so inpainting one object's box never touches another object. The split is written
as JPEG files plus a COCO instances JSON that ``pycocotools.coco.COCO`` loads. The same seed gives the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from kneurons.io import atomic_path, write_json


@dataclass(frozen=True)
class Category:
    """A COCO category: id, name (may hold several words) and supercategory."""

    id: int
    name: str
    supercategory: str


CATEGORIES: tuple[Category, ...] = (
    Category(1, "bear", "animal"),
    Category(2, "giraffe", "animal"),
    Category(3, "horse", "animal"),
    Category(4, "bus", "vehicle"),
    Category(5, "bicycle", "vehicle"),
    Category(6, "airplane", "vehicle"),
    Category(7, "banana", "food"),
    Category(8, "pizza", "food"),
    Category(9, "cake", "food"),
    Category(10, "stop sign", "outdoor"),
    Category(11, "fire hydrant", "outdoor"),
    Category(12, "traffic light", "outdoor"),
)

BACKGROUNDS: tuple[str, ...] = (
    "grassy field",
    "sandy beach",
    "brick wall",
    "wooden floor",
    "snowy ground",
    "blue sky",
)

Color = tuple[int, int, int]
Painter = Callable[[np.ndarray, Color], None]


@dataclass
class SceneObject:
    """One drawn object: its category, its pixel mask (H, W) bool and its tight box [x, y, w, h]."""

    category: Category
    mask: np.ndarray
    bbox: list[int]


@dataclass
class Scene:
    """A rendered scene: image (H, W, 3) RGB uint8, the background alone, its name and the objects."""

    image: np.ndarray
    background: np.ndarray
    background_name: str
    objects: list[SceneObject]


def _jitter(rng: np.random.Generator, color: Color, amount: int = 18) -> Color:
    """A base RGB color moved by up to ``amount`` per channel."""
    r, g, b = (
        min(255, max(0, int(c) + int(d))) for c, d in zip(color, rng.integers(-amount, amount + 1, 3), strict=True)
    )
    return r, g, b  # Python integers: 800,000 calls for the default's train split, where np.clip cost seconds


def _noise(rng: np.random.Generator, size: int, base: Color, sigma: float) -> np.ndarray:
    """A flat color plus Gaussian pixel noise, (size, size, 3) uint8."""
    img = np.asarray(base, np.float32) + rng.normal(0.0, sigma, (size, size, 3)).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def render_background(name: str, rng: np.random.Generator, size: int) -> np.ndarray:
    """Render one of BACKGROUNDS as a (size, size, 3) RGB uint8 texture."""
    if name == "grassy field":
        img = _noise(rng, size, _jitter(rng, (70, 140, 60)), 14)
        for _ in range(size * 2):
            x, y = (int(v) for v in rng.integers(0, size, 2))
            cv2.line(img, (x, y), (x + int(rng.integers(-2, 3)), y - 4), _jitter(rng, (40, 100, 35)), 1)
    elif name == "sandy beach":
        img = _noise(rng, size, _jitter(rng, (225, 205, 160)), 10)
    elif name == "brick wall":
        img = np.empty((size, size, 3), np.uint8)
        img[:] = _jitter(rng, (200, 200, 195), 10)
        brick, h = _jitter(rng, (160, 70, 50)), size // 8
        for row in range(9):
            offset = (row % 2) * h
            for x in range(-offset, size, 2 * h):
                cv2.rectangle(img, (x + 1, row * h + 1), (x + 2 * h - 2, row * h + h - 2), _jitter(rng, brick, 12), -1)
        img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
    elif name == "wooden floor":
        img = _noise(rng, size, _jitter(rng, (170, 120, 70)), 8)
        for y in range(0, size, size // 6):
            cv2.line(img, (0, y), (size - 1, y), _jitter(rng, (100, 65, 35)), 1)
    elif name == "snowy ground":
        img = _noise(rng, size, _jitter(rng, (235, 240, 248), 8), 6)
    elif name == "blue sky":
        top, bottom = np.asarray(_jitter(rng, (80, 140, 230))), np.asarray(_jitter(rng, (170, 210, 250)))
        t = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
        img = (top * (1 - t) + bottom * t).repeat(size, axis=1)
        img = np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)
    else:
        raise ValueError(f"unknown background: {name!r}")
    return np.ascontiguousarray(img)


def _sprite_painters(name: str, x: int, y: int, s: int, rng: np.random.Generator) -> list[tuple[Painter, Color]]:
    """The cv2 drawing calls of one sprite in the square box (x, y, s, s), with their RGB colors."""

    def pts(*xy: float) -> np.ndarray:
        return np.array([[x + int(a * s), y + int(b * s)] for a, b in zip(xy[::2], xy[1::2], strict=True)], np.int32)

    def circle(a: float, b: float, r: float, thick: int = -1) -> Painter:
        return lambda im, c: cv2.circle(im, (x + int(a * s), y + int(b * s)), max(1, int(r * s)), c, thick)

    def rect(a0: float, b0: float, a1: float, b1: float) -> Painter:
        return lambda im, c: cv2.rectangle(
            im, (x + int(a0 * s), y + int(b0 * s)), (x + int(a1 * s), y + int(b1 * s)), c, -1
        )

    def poly(*xy: float) -> Painter:
        return lambda im, c: cv2.fillPoly(im, [pts(*xy)], c)

    def line(a0: float, b0: float, a1: float, b1: float, t: int) -> Painter:
        return lambda im, c: cv2.line(im, (x + int(a0 * s), y + int(b0 * s)), (x + int(a1 * s), y + int(b1 * s)), c, t)

    def ellipse(
        a: float, b: float, ra: float, rb: float, ang: float = 0, start: int = 0, end: int = 360, t: int = -1
    ) -> Painter:
        return lambda im, c: cv2.ellipse(
            im, (x + int(a * s), y + int(b * s)), (max(1, int(ra * s)), max(1, int(rb * s))), ang, start, end, c, t
        )

    j = lambda c, a=18: _jitter(rng, c, a)  # noqa: E731
    t = max(2, s // 12)
    sprites: dict[str, list[tuple[Painter, Color]]] = {
        "bear": [
            (circle(0.22, 0.2, 0.13), j((90, 55, 30))),
            (circle(0.78, 0.2, 0.13), j((90, 55, 30))),
            (circle(0.5, 0.55, 0.4), j((110, 70, 40))),
            (circle(0.5, 0.68, 0.14), j((190, 150, 110))),
            (circle(0.36, 0.45, 0.05), (20, 15, 10)),
            (circle(0.64, 0.45, 0.05), (20, 15, 10)),
        ],
        "giraffe": [
            (rect(0.55, 0.05, 0.72, 0.6), j((235, 180, 60))),
            (ellipse(0.72, 0.1, 0.16, 0.08), j((235, 180, 60))),
            (ellipse(0.4, 0.62, 0.32, 0.15), j((235, 180, 60))),
            (line(0.15, 0.7, 0.15, 0.98, t), j((235, 180, 60))),
            (line(0.6, 0.7, 0.6, 0.98, t), j((235, 180, 60))),
            (circle(0.3, 0.6, 0.06), j((130, 70, 20))),
            (circle(0.5, 0.62, 0.06), j((130, 70, 20))),
            (circle(0.62, 0.3, 0.05), j((130, 70, 20))),
        ],
        "horse": [
            (ellipse(0.45, 0.5, 0.33, 0.16), j((60, 35, 25))),
            (poly(0.68, 0.45, 0.8, 0.1, 0.95, 0.18, 0.8, 0.5), j((60, 35, 25))),
            (line(0.2, 0.55, 0.18, 0.97, t), j((60, 35, 25))),
            (line(0.32, 0.55, 0.32, 0.97, t), j((60, 35, 25))),
            (line(0.58, 0.55, 0.58, 0.97, t), j((60, 35, 25))),
            (line(0.7, 0.55, 0.72, 0.97, t), j((60, 35, 25))),
            (line(0.13, 0.45, 0.03, 0.75, t), j((30, 20, 15))),
        ],
        "bus": [
            (rect(0.0, 0.2, 1.0, 0.8), j((240, 190, 20))),
            (rect(0.08, 0.3, 0.28, 0.5), j((170, 210, 240))),
            (rect(0.38, 0.3, 0.58, 0.5), j((170, 210, 240))),
            (rect(0.68, 0.3, 0.92, 0.5), j((170, 210, 240))),
            (circle(0.22, 0.82, 0.12), (25, 25, 25)),
            (circle(0.78, 0.82, 0.12), (25, 25, 25)),
        ],
        "bicycle": [
            (circle(0.22, 0.68, 0.2, t), (30, 30, 30)),
            (circle(0.78, 0.68, 0.2, t), (30, 30, 30)),
            (line(0.22, 0.68, 0.45, 0.35, t), j((200, 30, 40))),
            (line(0.45, 0.35, 0.78, 0.68, t), j((200, 30, 40))),
            (line(0.45, 0.35, 0.5, 0.68, t), j((200, 30, 40))),
            (line(0.7, 0.3, 0.78, 0.68, t), j((200, 30, 40))),
        ],
        "airplane": [
            (ellipse(0.5, 0.5, 0.48, 0.1), j((200, 205, 215), 10)),
            (poly(0.4, 0.5, 0.62, 0.05, 0.7, 0.08, 0.58, 0.5), j((110, 120, 140))),
            (poly(0.4, 0.5, 0.62, 0.95, 0.7, 0.92, 0.58, 0.5), j((110, 120, 140))),
            (poly(0.05, 0.5, 0.02, 0.25, 0.14, 0.25, 0.2, 0.5), j((110, 120, 140))),
        ],
        "banana": [
            (ellipse(0.5, 0.3, 0.42, 0.42, 0, 30, 150, max(3, s // 6)), j((245, 215, 40))),
            (circle(0.14, 0.52, 0.05), (70, 50, 20)),
        ],
        "pizza": [
            (poly(0.05, 0.1, 0.95, 0.1, 0.5, 0.95), j((240, 190, 90))),
            (rect(0.05, 0.05, 0.95, 0.15), j((180, 110, 40))),
            (circle(0.33, 0.3, 0.08), j((190, 40, 30))),
            (circle(0.62, 0.32, 0.08), j((190, 40, 30))),
            (circle(0.5, 0.58, 0.08), j((190, 40, 30))),
        ],
        "cake": [
            (rect(0.1, 0.45, 0.9, 0.95), j((250, 225, 235), 8)),
            (rect(0.1, 0.6, 0.9, 0.72), j((230, 110, 160))),
            (rect(0.1, 0.4, 0.9, 0.47), j((230, 110, 160))),
            (rect(0.46, 0.12, 0.54, 0.4), j((90, 140, 230))),
            (circle(0.5, 0.08, 0.06), (255, 200, 40)),
        ],
        "stop sign": [
            (rect(0.46, 0.6, 0.54, 1.0), (150, 150, 150)),
            (poly(0.3, 0.0, 0.7, 0.0, 0.9, 0.2, 0.9, 0.5, 0.7, 0.7, 0.3, 0.7, 0.1, 0.5, 0.1, 0.2), j((210, 25, 30))),
            (rect(0.22, 0.3, 0.78, 0.4), (245, 245, 245)),
        ],
        "fire hydrant": [
            (ellipse(0.5, 0.22, 0.22, 0.16, 0, 180, 360), j((220, 40, 30))),
            (rect(0.28, 0.2, 0.72, 0.88), j((220, 40, 30))),
            (rect(0.12, 0.4, 0.88, 0.55), j((220, 40, 30))),
            (rect(0.2, 0.86, 0.8, 1.0), j((120, 20, 15))),
            (circle(0.5, 0.48, 0.07), (240, 200, 60)),
        ],
        "traffic light": [
            (rect(0.46, 0.85, 0.54, 1.0), (90, 90, 90)),
            (rect(0.28, 0.0, 0.72, 0.86), j((35, 35, 40), 8)),
            (circle(0.5, 0.16, 0.11), (240, 40, 40)),
            (circle(0.5, 0.43, 0.11), (250, 200, 40)),
            (circle(0.5, 0.7, 0.11), (40, 220, 80)),
        ],
    }
    return sprites[name]


def draw_object(canvas: np.ndarray, name: str, x: int, y: int, s: int, rng: np.random.Generator) -> np.ndarray:
    """Draw category ``name`` into ``canvas`` (H, W, 3, modified in place) in the square box (x, y, s, s).

    Returns the object's mask, (H, W) bool: every pixel the drawing changed belongs to it.
    """
    mask = np.zeros(canvas.shape[:2], np.uint8)
    for paint, color in _sprite_painters(name, x, y, s, rng):
        paint(canvas, color)
        paint(mask, (255, 255, 255))
    return mask > 0


def _tight_box(mask: np.ndarray) -> list[int]:
    """The tight [x, y, w, h] box of a (H, W) bool mask."""
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def _place(rng: np.random.Generator, sizes: list[int], image_size: int, margin: int) -> list[tuple[int, int]] | None:
    """Top-left corners for squares of the given sizes, pairwise ``margin`` apart, or None if none was found."""
    corners: list[tuple[int, int]] = []
    for s in sizes:
        for _ in range(100):
            x, y = (int(v) for v in rng.integers(1, image_size - s - 1, 2))
            if all(
                x + s + margin <= cx or cx + cs + margin <= x or y + s + margin <= cy or cy + cs + margin <= y
                for (cx, cy), cs in zip(corners, sizes, strict=False)
            ):
                corners.append((x, y))
                break
        else:
            return None
    return corners


def render_scene(rng: np.random.Generator, image_size: int, max_objects: int, margin: int) -> Scene:
    """Render one scene: a random background and 1..max_objects objects of distinct random categories."""
    background_name = BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))]
    background = render_background(background_name, rng, image_size)
    while True:
        n = int(rng.integers(1, max_objects + 1))
        cats = [CATEGORIES[i] for i in sorted(rng.choice(len(CATEGORIES), n, replace=False))]
        sizes = [int(rng.integers(image_size * 3 // 10, image_size * 2 // 5 + 1)) for _ in cats]
        corners = _place(rng, sizes, image_size, margin)
        if corners is not None:
            break
    image = background.copy()
    objects = []
    for cat, (x, y), s in zip(cats, corners, sizes, strict=True):
        mask = draw_object(image, cat.name, x, y, s, rng)
        objects.append(SceneObject(cat, mask, _tight_box(mask)))
    return Scene(image, background, background_name, objects)


def mask_polygons(mask: np.ndarray) -> list[list[float]]:
    """COCO polygons [[x0, y0, x1, y1, ...], ...] of the outer contours of a (H, W) bool mask."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [[float(v) for v in c.reshape(-1)] for c in contours if len(c) >= 3]


# Bump when a change to the scenes (sprites, backgrounds, placement, the random draws) changes what a seed makes:
# the shipped captioner's training record names the version its training split was drawn with.
GENERATOR_VERSION = 1
# Each split's seed is synth.seed plus its offset (rule synth_split).
SPLIT_SEED_OFFSETS = {"train": 1, "val": 2}


def split_scenes(
    n_images: int, seed: int, image_size: int, max_objects: int, margin: int
) -> Iterator[tuple[Scene, dict, list[dict]]]:
    """The scenes of a split in order: (scene, its COCO image entry, its COCO annotations), image ids 1..n_images
    and annotation ids counted from 1 across the split."""
    rng = np.random.default_rng(seed)
    n_annotations = 0
    for image_id in range(1, n_images + 1):
        scene = render_scene(rng, image_size, max_objects, margin)
        image = {
            "id": image_id,
            "file_name": f"{image_id:012d}.jpg",
            "height": image_size,
            "width": image_size,
            "background": scene.background_name,
        }
        annotations = []
        for obj in scene.objects:
            n_annotations += 1
            annotations.append(
                {
                    "id": n_annotations,
                    "image_id": image_id,
                    "category_id": obj.category.id,
                    "bbox": [float(v) for v in obj.bbox],
                    "segmentation": mask_polygons(obj.mask),
                    "area": float(obj.mask.sum()),
                    "iscrowd": 0,
                }
            )
        yield scene, image, annotations


def coco_dataset(seed: int, images: list[dict], annotations: list[dict]) -> dict:
    """The COCO instances dict of a split."""
    return {
        "info": {"description": "kneurons synthetic scenes", "seed": seed},
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c.id, "name": c.name, "supercategory": c.supercategory} for c in CATEGORIES],
    }


def split_annotations(n_images: int, seed: int, image_size: int, max_objects: int, margin: int) -> dict:
    """The COCO instances dict ``write_split`` writes for these settings, without writing any image (the scenes
    are drawn, the JPEGs not encoded)."""
    images, annotations = [], []
    for _scene, image, anns in split_scenes(n_images, seed, image_size, max_objects, margin):
        images.append(image)
        annotations += anns
    return coco_dataset(seed, images, annotations)


def annotations_digest(coco: dict) -> str:
    """SHA-256 of a COCO dict's canonical JSON (sorted keys, no spaces): equal dicts, equal digests, however the
    file was indented."""
    return hashlib.sha256(json.dumps(coco, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_split(
    out_json: str | os.PathLike,
    image_dir: str | os.PathLike,
    n_images: int,
    seed: int,
    image_size: int,
    max_objects: int,
    margin: int,
    jpeg_quality: int,
) -> None:
    """Write ``n_images`` scenes as JPEGs into ``image_dir`` and their COCO instances JSON to ``out_json``.

    Each image also records its background name under ``image["background"]`` (a COCO-compatible extra key).
    """
    images, annotations = [], []
    with atomic_path(image_dir) as tmp_dir:
        tmp_dir.mkdir()
        for scene, image, anns in split_scenes(n_images, seed, image_size, max_objects, margin):
            path = tmp_dir / image["file_name"]
            bgr = cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR)
            if not cv2.imwrite(str(path), bgr, [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality]):
                raise OSError(f"{path}: could not write JPEG")
            images.append(image)
            annotations += anns
    write_json(out_json, coco_dataset(seed, images, annotations))
