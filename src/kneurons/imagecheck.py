"""The check of every image a run will read, before any model job: the file exists, decodes completely (a truncated
JPEG or PNG is a fault, where cv2 would return gray pixels and a bare libjpeg warning) and has its annotated size."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from PIL import Image

from kneurons.coco import ImageRecord
from kneurons.errors import DataError
from kneurons.io import read_tsv_rows, write_tsv_rows

COLUMNS = ["image_id", "file", "problem"]


def image_problem(record: ImageRecord) -> str:
    """What is wrong with ``record``'s file ("" if nothing): missing, not decodable to the end, or of another size
    than annotated (stored pixels: EXIF orientation ignored, as COCO's boxes are drawn). Decoder warnings that leave
    the pixels whole (e.g. corrupt EXIF) are logged with the file's name."""
    path = record.path
    if not path.is_file():
        return "image file not found"
    try:
        with warnings.catch_warnings(record=True) as caught, Image.open(path) as im:
            warnings.simplefilter("always")
            im.load()
            w, h = im.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        return f"image does not decode completely ({e})"
    for warning in caught:
        logging.getLogger("kneurons").info("%s (image %d): decoder warning: %s", path, record.id, warning.message)
    if (h, w) != (record.height, record.width):
        return f"the file is {w}x{h} (width x height) but the annotations say {record.width}x{record.height}"
    return ""


def check_images(records: Iterable[ImageRecord]) -> list[dict]:
    """One row per distinct image of ``records`` (image id order): image_id, file, problem ("" when fine)."""
    unique = {r.id: r for r in records}
    return [{"image_id": i, "file": str(unique[i].path), "problem": image_problem(unique[i])} for i in sorted(unique)]


def problem_lines(rows: Sequence[Mapping]) -> list[str]:
    """One line per bad image: the file, the image id and what is wrong."""
    return [f"{r['file']} (image {r['image_id']}): {r['problem']}" for r in rows if r["problem"]]


def write_check(out: str | os.PathLike, rows: Sequence[Mapping], lines: Sequence[str], bad_images: str) -> None:
    """Write the check's rows; with ``bad_images`` "stop", raise DataError (nothing written) if any image is bad,
    after the caller has shown their ``problem_lines`` (``lines``)."""
    if lines and bad_images == "stop":
        raise DataError(
            f"{len(lines)} bad image(s) among the {len(rows)} this run reads (one line each above); fix them, "
            "or set samples.bad_images: skip to reject their candidates"
        )
    write_tsv_rows(out, rows, COLUMNS)


def read_problems(path: str | os.PathLike) -> dict[int, str]:
    """{image_id: problem} of the bad images of a check file."""
    return {int(r["image_id"]): r["problem"] for r in read_tsv_rows(Path(path)) if r["problem"]}
