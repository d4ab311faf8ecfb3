"""The lines of the perturbation and restoration files (JSON Lines): one per caption, written by rules
reference_captions and perturb, read by the tables and figures."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from kneurons.captions import mentions
from kneurons.names import BOUNDS
from kneurons.samples import Candidate


def caption_line(
    scored: tuple[str, float | None],
    sample: Candidate,
    knowledge: str,
    synonyms: Mapping[str, Sequence[str]],
    **fields: object,
) -> dict:
    """One line of a perturbation file: ``fields`` (method, set, perturbation, level, seed, ...) and the caption of
    a sample's image with what it mentions: its own object, and k (the set's target); ``logp``, the teacher-forced
    log p of its own object's first token in its clean caption (None: not scored)."""
    caption, logp = scored
    return (
        {"knowledge": knowledge}
        | fields
        | {
            "image_id": sample.image_id,
            "image_knowledge": sample.knowledge,
            "caption": caption,
            "mentions": mentions(caption, sample.knowledge, synonyms.get(sample.knowledge, ())),
            "mentions_target": mentions(caption, knowledge, synonyms.get(knowledge, ())),
            "image_has_target": sample.knowledge == knowledge or knowledge in sample.others.split(","),
            "inpainted_caption": sample.inpainted_caption,
            "logp": logp,
        }
    )


def empty_line(nset: Mapping) -> str:
    """The line of a set the thresholds left empty: recorded, nothing to perturb or patch."""
    empty = {"method": nset["method"], "knowledge": nset["knowledge"], "set": nset["image_id"]}
    return json.dumps(empty | {"set_size": 0, "empty": True}) + "\n"


def read_lines(paths: Iterable[str | os.PathLike]) -> tuple[list[dict], Counter]:
    """The caption lines of perturbation or restoration files, in file order, and the number of empty sets per
    (method, knowledge)."""
    lines = [json.loads(ln) for p in paths for ln in Path(p).read_text().splitlines()]
    empty = Counter((ln["method"], ln["knowledge"]) for ln in lines if ln.get("empty"))
    return [ln for ln in lines if not ln.get("empty")], empty


def read_restorations(paths: Iterable[str | os.PathLike]) -> tuple[list[dict], list[dict], Counter]:
    """The restoration lines of the set kinds, those of the bounds, and the empty sets per (method, knowledge)."""
    lines, empty = read_lines(paths)
    return [ln for ln in lines if ln["method"] not in BOUNDS], [ln for ln in lines if ln["method"] in BOUNDS], empty
