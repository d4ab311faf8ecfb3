"""The sample set D: knowledge targets, candidate images, inpainting k out, and the paper's three constraints."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import cv2
import numpy as np
from pycocotools.coco import COCO

from kneurons.captions import mentions
from kneurons.coco import Annotation, ImageRecord, read_image
from kneurons.errors import DataError
from kneurons.inpaint import object_mask, remove_objects
from kneurons.io import atomic_path, read_tsv_rows, write_tsv_rows


def slug(name: str) -> str:
    """A knowledge name as a path component: "fire hydrant" -> "fire_hydrant"."""
    return name.replace(" ", "_")


@dataclass(frozen=True)
class Knowledge:
    """A knowledge target: a COCO category name, its path slug and supercategory, and how many images hold it."""

    name: str
    slug: str
    supercategory: str
    images: int


def resolve_knowledge(
    coco: COCO, spec: str | Sequence[str], source: str, per_supercategory: int = 3
) -> list[Knowledge]:
    """The knowledge targets named by ``spec`` (a list of category names) or ``"auto"``.

    ``auto`` takes, for each supercategory, the ``per_supercategory`` categories found in the most images
    (ties by category id). Raises DataError naming ``source`` and the first unknown name.
    """
    cats = coco.loadCats(sorted(coco.getCatIds()))
    by_name = {c["name"]: c for c in cats}
    counts = {c["id"]: len(coco.getImgIds(catIds=[c["id"]])) for c in cats}
    if spec == "auto":
        chosen = []
        for sup in dict.fromkeys(c["supercategory"] for c in cats):
            members = sorted((c for c in cats if c["supercategory"] == sup), key=lambda c: (-counts[c["id"]], c["id"]))
            chosen += [c["name"] for c in members[:per_supercategory] if counts[c["id"]] > 0]
    else:
        chosen = list(spec)
        unknown = [n for n in chosen if n not in by_name]
        if unknown:
            raise DataError(f"{source}: knowledge {unknown[0]!r} is not a category (known: {', '.join(by_name)})")
    return [Knowledge(n, slug(n), by_name[n]["supercategory"], counts[by_name[n]["id"]]) for n in chosen]


@dataclass
class Candidate:
    """One candidate image for knowledge k and what became of it.

    ``others``: other categories in the image; ``covered``: those whose box k's inpainting mask covers by at
    least half; ``status``: "selected", "rejected" or "pending" (passed, but D was already full).
    """

    knowledge: str
    image_id: int
    inpainted: str
    others: str = ""
    covered: str = ""
    caption: str = ""
    inpainted_caption: str = ""
    status: str = ""
    reason: str = ""


def write_tsv(path: str | os.PathLike, rows: Sequence[Candidate]) -> None:
    """Write candidates as a tab-separated file with a header (atomically)."""
    write_tsv_rows(path, (asdict(r) for r in rows), [f.name for f in fields(Candidate)])


def read_tsv(path: str | os.PathLike) -> list[Candidate]:
    """Read a file written by write_tsv."""
    return [Candidate(**{**r, "image_id": int(r["image_id"])}) for r in read_tsv_rows(path)]


def _covered(mask: np.ndarray, bbox: tuple[float, float, float, float]) -> bool:
    x, y, w, h = (round(v) for v in bbox)
    region = mask[max(0, y) : y + max(1, h), max(0, x) : x + max(1, w)]
    return region.size > 0 and float((region > 0).mean()) >= 0.5


def check_box(rec: ImageRecord, ann: Annotation, slack: float = 1.0) -> None:
    """DataError naming the image and the box unless ``ann``'s box has positive area and lies inside the image
    (``slack`` pixels of rounding allowed)."""
    x, y, w, h = ann.bbox
    where = f"{rec.path} (image {rec.id}): {ann.category} box [x, y, w, h] = {list(ann.bbox)}"
    if not (w > 0 and h > 0):
        raise DataError(f"{where} has zero area")
    if x < -slack or y < -slack or x + w > rec.width + slack or y + h > rec.height + slack:
        raise DataError(f"{where} lies outside the {rec.width}x{rec.height} image")


def inpaint_candidates(
    records: Sequence[ImageRecord],
    name: str,
    out_dir: str | os.PathLike,
    max_candidates: int,
    source: str = "box",
    dilate: int = 0,
    radius: int = 3,
) -> list[Candidate]:
    """Inpaint every instance of ``name`` out of the first ``max_candidates`` images holding it (image id order).

    Writes ``{out_dir}/{image_id}.png`` (lossless) and returns the candidates, their other objects and those
    that the inpainting mask also covers.
    """
    out = Path(out_dir)
    rows = []
    with atomic_path(out) as tmp:
        tmp.mkdir()
        for rec in [r for r in records if any(a.category == name for a in r.annotations)][:max_candidates]:
            image = read_image(rec.path)
            targets = [a for a in rec.annotations if a.category == name]
            mask = np.zeros((rec.height, rec.width), np.uint8)
            for a in targets:
                check_box(rec, a)
                mask |= object_mask(a, rec.height, rec.width, source, dilate)
            others = [a for a in rec.annotations if a.category != name]
            covered = sorted({a.category for a in others if _covered(mask, a.bbox)})
            inpainted = remove_objects(image, targets, source, dilate, radius)
            cv2.imwrite(str(tmp / f"{rec.id}.png"), cv2.cvtColor(inpainted, cv2.COLOR_RGB2BGR))
            rows.append(
                Candidate(
                    knowledge=name,
                    image_id=rec.id,
                    inpainted=f"{out.as_posix()}/{rec.id}.png",
                    others=",".join(sorted({a.category for a in others})),
                    covered=",".join(covered),
                )
            )
    return rows


def constraint_failure(row: Candidate, synonyms: Sequence[str] = ()) -> str:
    """Why a captioned candidate fails the paper's three constraints, or "" if it passes.

    1. the original caption mentions k; 2. the inpainted caption does not; 3. only k was removed: no other
    object's box is covered by k's mask, and no other object the original caption mentions is lost.
    """
    k = row.knowledge
    if not mentions(row.caption, k, synonyms):
        return "k not in caption"
    if mentions(row.inpainted_caption, k, synonyms):
        return "k still present"
    if row.covered:
        return f"other object also removed: {row.covered} (mask overlap)"
    lost = [
        o for o in row.others.split(",") if o and mentions(row.caption, o) and not mentions(row.inpainted_caption, o)
    ]
    if lost:
        return f"other object also removed: {','.join(lost)} (caption)"
    return ""


def select_samples(rows: Sequence[Candidate], n: int, synonyms: Sequence[str] = ()) -> list[Candidate]:
    """Judge every candidate; the first ``n`` passing ones (image id order) are selected, the rest say why not."""
    judged, taken = [], 0
    for row in sorted(rows, key=lambda r: r.image_id):
        reason = constraint_failure(row, synonyms)
        if reason:
            status = "rejected"
        elif taken < n:
            status, taken = "selected", taken + 1
        else:
            status, reason = "pending", "passed; samples_per_knowledge reached"
        judged.append(Candidate(**{**asdict(row), "status": status, "reason": reason}))
    return judged


def reason_counts(rows: Sequence[Candidate]) -> dict[str, int]:
    """How many candidates ended with each reason (the selected ones under "selected")."""
    return dict(Counter(r.reason.split(" (")[0].split(":")[0] if r.reason else r.status for r in rows))
