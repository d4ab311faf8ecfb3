"""The sample set D: knowledge targets, candidate images, inpainting k out, and the paper's three constraints."""

from __future__ import annotations

import logging
import os
import string
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import cv2
import numpy as np
from pycocotools.coco import COCO

from kneurons.captions import mentions
from kneurons.coco import Annotation, ImageRecord, read_record
from kneurons.errors import DataError
from kneurons.inpaint import object_mask, remove_objects
from kneurons.io import atomic_path, read_tsv_rows, write_tsv_rows

_SAFE = set(string.ascii_letters + string.digits + "-")


def slug(name: str) -> str:
    """A knowledge name as a path component, reversible by ``unslug``: a space becomes "_", letters, digits and "-"
    stay, every other byte of the UTF-8 name becomes "+XX" (hex): "fire hydrant" -> "fire_hydrant",
    "teddy_bear" -> "teddy+5Fbear", "crème brûlée" -> "cr+C3+A8me_br+C3+BBl+C3+A9e"."""
    return "".join(
        "_" if ch == " " else ch if ch in _SAFE else "".join(f"+{b:02X}" for b in ch.encode()) for ch in name
    )


def unslug(text: str) -> str:
    """The knowledge name of a slug (the inverse of ``slug``)."""
    raw, i = bytearray(), 0
    while i < len(text):
        if text[i] == "+":
            raw.append(int(text[i + 1 : i + 3], 16))
            i += 3
        else:
            raw += b" " if text[i] == "_" else text[i].encode()
            i += 1
    return raw.decode()


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
        for sup in dict.fromkeys(c.get("supercategory", "") for c in cats):
            members = sorted(
                (c for c in cats if c.get("supercategory", "") == sup), key=lambda c: (-counts[c["id"]], c["id"])
            )
            chosen += [c["name"] for c in members[:per_supercategory] if counts[c["id"]] > 0]
        if not chosen:
            raise DataError(
                f"{source}: knowledge auto found no category with an annotated object "
                f"({len(cats)} categories, {len(coco.anns)} annotations)"
            )
    else:
        chosen = list(spec)
        unknown = [n for n in chosen if n not in by_name]
        if unknown:
            raise DataError(f"{source}: knowledge {unknown[0]!r} is not a category (known: {', '.join(by_name)})")
    return [Knowledge(n, slug(n), by_name[n].get("supercategory", ""), counts[by_name[n]["id"]]) for n in chosen]


@dataclass
class Candidate:
    """One candidate image for knowledge k and what became of it.

    ``others``: other categories in the image; ``covered``: those whose box k's inpainting mask covers by at
    least half; ``status``: "selected", "rejected" or "pending" (passed, but D was already full);
    ``caption_ids``: the token ids the model emitted for ``caption`` (space-separated), what log p and GradCAM
    teacher-force.
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
    caption_ids: str = ""

    def emitted_ids(self, source: str | os.PathLike) -> list[int]:
        """The ids of the original caption as the model emitted them; DataError naming ``source`` (the file the
        row was read from) where none were kept."""
        if not self.caption_ids:
            raise DataError(
                f"{source}: image {self.image_id} has no caption_ids (the ids the model emitted for its caption: "
                "a file made before kneurons kept them); rerun rule caption_candidates"
            )
        return [int(t) for t in self.caption_ids.split()]


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


BOX_TOLERANCE = 2.0  # pixels a box may reach past the image's edge (COCO boxes are rounded floats): clipped


def box_problem(rec: ImageRecord, ann: Annotation, tolerance: float = BOX_TOLERANCE) -> str:
    """Why ``ann``'s box cannot be inpainted ("" if it can): zero area, or more than ``tolerance`` pixels past the
    edge of the image (within it, the mask is clipped to the image)."""
    x, y, w, h = ann.bbox
    where = f"{ann.category} box [x, y, w, h] = {list(ann.bbox)} (annotation {ann.id})"
    if not (w > 0 and h > 0):
        return f"{where} has " + ("zero area" if w == 0 or h == 0 else "a negative width or height")
    if x < -tolerance or y < -tolerance or x + w > rec.width + tolerance or y + h > rec.height + tolerance:
        return f"{where} lies more than {tolerance:g} px outside the {rec.width}x{rec.height} image"
    return ""


def _past_edge(rec: ImageRecord, ann: Annotation) -> bool:
    x, y, w, h = ann.bbox
    return x < 0 or y < 0 or x + w > rec.width or y + h > rec.height


def candidate_records(records: Sequence[ImageRecord], name: str, max_candidates: int) -> list[ImageRecord]:
    """The candidate images of target ``name``: the first ``max_candidates`` images holding it (image id order)."""
    return [r for r in records if any(a.category == name for a in r.annotations)][:max_candidates]


def inpaint_candidates(
    records: Sequence[ImageRecord],
    name: str,
    out_dir: str | os.PathLike,
    max_candidates: int,
    source: str = "box",
    dilate: int = 0,
    radius: int = 3,
    bad_images: Mapping[int, str] | None = None,
) -> list[Candidate]:
    """Inpaint every instance of ``name``, crowd regions included, out of the first ``max_candidates`` images
    holding it (image id order).

    Writes ``{out_dir}/{image_id}.png`` (lossless) and returns the candidates, their other objects (crowd regions
    too) and those that the inpainting mask also covers. A candidate whose box of k is unusable (``box_problem``)
    is rejected with that reason and not inpainted, and so is one whose image the check found bad
    (``bad_images``: {image_id: problem}); boxes slightly past the edge are clipped (logged). Each image is checked
    against its annotated size (``read_record``).
    """
    log = logging.getLogger("kneurons")
    out = Path(out_dir)
    rows = []
    with atomic_path(out) as tmp:
        tmp.mkdir()
        for rec in candidate_records(records, name, max_candidates):
            targets = [a for a in rec.annotations if a.category == name]
            others = [a for a in rec.annotations if a.category != name]
            row = Candidate(name, rec.id, "", others=",".join(sorted({a.category for a in others})))
            problems = [f"bad box: {p}" for p in (box_problem(rec, a) for a in targets) if p]
            if (bad_images or {}).get(rec.id):
                problems.insert(0, f"bad image: {bad_images[rec.id]}")
            if problems:
                rows.append(Candidate(**{**asdict(row), "status": "rejected", "reason": problems[0]}))
                log.info("image %d (%s): skipped, %s", rec.id, rec.path, problems[0])
                continue
            for a in targets:
                if _past_edge(rec, a):
                    log.info("image %d: %s box %s clipped to the %dx%d image", rec.id, name, list(a.bbox), *rec.size)
            image = read_record(rec)
            mask = np.zeros((rec.height, rec.width), np.uint8)
            for a in targets:
                mask |= object_mask(a, rec.height, rec.width, source, dilate)
            inpainted = remove_objects(image, targets, source, dilate, radius)
            cv2.imwrite(str(tmp / f"{rec.id}.png"), cv2.cvtColor(inpainted, cv2.COLOR_RGB2BGR))
            row.inpainted = f"{out.as_posix()}/{rec.id}.png"
            row.covered = ",".join(sorted({a.category for a in others if _covered(mask, a.bbox)}))
            rows.append(row)
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
    """Judge every candidate; the first ``n`` passing ones (image id order) are selected, the rest say why not
    (a candidate already rejected before captioning keeps its reason)."""
    judged, taken = [], 0
    for row in sorted(rows, key=lambda r: r.image_id):
        reason = row.reason if row.status == "rejected" else constraint_failure(row, synonyms)
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


def write_knowledge(path: str | os.PathLike, targets: Sequence[Knowledge]) -> None:
    """List the knowledge targets as a TSV (rule knowledge's output)."""
    write_tsv_rows(path, (asdict(t) for t in targets), [f.name for f in fields(Knowledge)])


def read_knowledge(path: str | os.PathLike) -> list[Knowledge]:
    """The targets listed by ``write_knowledge``."""
    return [Knowledge(**{**r, "images": int(r["images"])}) for r in read_tsv_rows(path)]


def selected(rows: Sequence[Candidate]) -> list[Candidate]:
    """The rows of D."""
    return [r for r in rows if r.status == "selected"]


def sample_images(selected_tsv: str | os.PathLike) -> list[Candidate]:
    """D over all knowledge targets: the selected rows of the sample table, in (knowledge, image id) order."""
    return sorted(selected(read_tsv(selected_tsv)), key=lambda r: (r.knowledge, r.image_id))


def selection_summary(name: str, counts: dict[str, int]) -> str:
    """One line on how many samples target ``name`` got out of how many candidates, and why the others failed."""
    n = counts.get("selected", 0)
    others = ", ".join(f"{why}: {c}" for why, c in sorted(counts.items()) if why != "selected")
    line = f"{name}: {n} sample(s) from {sum(counts.values())} candidate(s)"
    if not counts:
        return f"{line}: no image holds it"
    return f"{line}" + (f" (not selected: {others})" if others else "") + ("" if n else ": no sample, target left out")


def no_sample_note(rows: Sequence[Candidate]) -> str:
    """Why D is empty, for a table that has no row: every candidate's reason counted, or no candidate at all."""
    reasons = ", ".join(f"{why}: {n}" for why, n in sorted(reason_counts(rows).items()))
    return f"No knowledge target has a sample in D ({reasons or 'no candidate image'}): nothing to show."
