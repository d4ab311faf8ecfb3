"""Cost of rule check_images on real-sized images: the full-decode check (PIL, truncation caught, size compared)
against a plain cv2.imread of the same files (the read every later job does anyway), same run, one thread.

Usage: python bench/image_check.py [--images 200] [--repeats 3]
Writes COCO-sized JPEGs (640 x 480 and 480 x 640, quality 90, smooth colour fields with noise and shapes, about
the size of COCO's files) to a temporary directory; prints ms per image for both, their ratio and the check's
cost extrapolated to COCO val2017's 5,000 images.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from kneurons.coco import ImageRecord
from kneurons.imagecheck import check_images


def write_images(root: Path, n: int) -> list[ImageRecord]:
    rng = np.random.default_rng(0)
    records = []
    for i in range(n):
        h, w = (480, 640) if i % 3 else (640, 480)
        coarse = rng.uniform(0, 255, (6, 8, 3)).astype(np.float32)
        image = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC) + rng.normal(0, 12, (h, w, 3))
        for _ in range(5):
            x, y = int(rng.integers(0, w - 60)), int(rng.integers(0, h - 60))
            cv2.rectangle(image, (x, y), (x + 60, y + 40), rng.uniform(0, 255, 3).tolist(), -1)
        path = root / f"{i:012d}.jpg"
        cv2.imwrite(str(path), np.clip(image, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 90])
        records.append(ImageRecord(i, path, h, w, ()))
    return records


def seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cv2.setNumThreads(1)
    with tempfile.TemporaryDirectory() as tmp:
        records = write_images(Path(tmp), args.images)
        size = sum(r.path.stat().st_size for r in records) / len(records)
        assert not any(r["problem"] for r in check_images(records))
        check = statistics.median(seconds(lambda: check_images(records)) for _ in range(args.repeats))
        plain = statistics.median(
            seconds(lambda: [cv2.imread(str(r.path)) for r in records]) for _ in range(args.repeats)
        )
    n = len(records)
    print(f"images                 : {n} JPEGs, mean {size / 1024:.0f} KiB (one thread)")
    print(f"check (PIL full decode): {1000 * check / n:6.2f} ms/image (median of {args.repeats})")
    print(f"cv2.imread             : {1000 * plain / n:6.2f} ms/image (median of {args.repeats})")
    print(f"ratio check / imread   : {check / plain:6.2f}x")
    print(f"COCO val2017 (5,000)   : {5000 * check / n:6.1f} s for the check")


if __name__ == "__main__":
    main()
