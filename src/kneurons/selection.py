"""The sample-selection rules (no model): knowledge targets, inpainting, the constraints, the sample table."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict

from kneurons.coco import ImageRecord, image_records, load_coco
from kneurons.imagecheck import check_images, problem_lines, read_problems, write_check
from kneurons.io import read_tsv_rows, write_tsv_rows
from kneurons.jobs import console
from kneurons.samples import (
    Candidate,
    Knowledge,
    candidate_records,
    inpaint_candidates,
    read_tsv,
    reason_counts,
    resolve_knowledge,
    select_samples,
    write_tsv,
)


def write_knowledge(annotations: str, spec: str | list[str], per_supercategory: int, out: str) -> list[Knowledge]:
    """Rule knowledge: resolve the knowledge targets against the COCO categories and list them (TSV)."""
    targets = resolve_knowledge(load_coco(annotations), spec, annotations, per_supercategory)
    write_tsv_rows(out, (asdict(t) for t in targets), ["name", "slug", "supercategory", "images"])
    return targets


def read_knowledge(path: str | os.PathLike) -> list[Knowledge]:
    """The targets listed by rule knowledge."""
    return [Knowledge(**{**r, "images": int(r["images"])}) for r in read_tsv_rows(path)]


def records_by_id(annotations: str, images: str) -> dict[int, ImageRecord]:
    """The images of a COCO split by id."""
    return {r.id: r for r in image_records(load_coco(annotations), images)}


def inpaint_stage(
    annotations: str, images: str, name: str, checked: str, out_tsv: str, out_dir: str, **options
) -> None:
    """Rule inpaint: inpaint k out of its candidate images (those the image check ``checked`` found bad are
    rejected with its reason); list them with their other objects."""
    records = image_records(load_coco(annotations), images)
    write_tsv(out_tsv, inpaint_candidates(records, name, out_dir, bad_images=read_problems(checked), **options))


def check_stage(
    annotations: str, images: str, knowledge_tsv: str, max_candidates: int, bad_images: str, out: str
) -> list[str]:
    """Rule check_images: check every candidate image of every target once (kneurons.imagecheck); returns the
    problem lines (with ``bad_images`` "stop" a bad image raises DataError after ``console`` showed them)."""
    records = image_records(load_coco(annotations), images)
    chosen = [r for t in read_knowledge(knowledge_tsv) for r in candidate_records(records, t.name, max_candidates)]
    rows = check_images(chosen)
    lines = problem_lines(rows)
    for line in lines:
        console(line)
    write_check(out, rows, lines, bad_images)
    return lines


def select_stage(captioned_tsv: str, n: int, synonyms: Sequence[str], out_tsv: str) -> dict[str, int]:
    """Rule select_samples: judge the three constraints and keep the first ``n`` passing candidates.

    Returns how many candidates ended with each reason (the selected ones under "selected").
    """
    judged = select_samples(read_tsv(captioned_tsv), n, synonyms)
    write_tsv(out_tsv, judged)
    return reason_counts(judged)


def selection_summary(name: str, counts: dict[str, int]) -> str:
    """One line on how many samples target ``name`` got out of how many candidates, and why the others failed."""
    n = counts.get("selected", 0)
    others = ", ".join(f"{why}: {c}" for why, c in sorted(counts.items()) if why != "selected")
    line = f"{name}: {n} sample(s) from {sum(counts.values())} candidate(s)"
    if not counts:
        return f"{line}: no image holds it"
    return f"{line}" + (f" (not selected: {others})" if others else "") + ("" if n else ": no sample, target left out")


def selected(rows: Sequence[Candidate]) -> list[Candidate]:
    """The rows of D."""
    return [r for r in rows if r.status == "selected"]


def sample_table(selected_tsvs: Sequence[str], out_tsv: str) -> None:
    """Rule sample_table: every target's candidates, selected or with the reason they were not, in one TSV."""
    write_tsv(out_tsv, [r for p in selected_tsvs for r in read_tsv(p)])


def sample_images(selected_tsv: str) -> list[Candidate]:
    """D over all knowledge targets: the selected rows of the sample table, in (knowledge, image id) order."""
    return sorted(selected(read_tsv(selected_tsv)), key=lambda r: (r.knowledge, r.image_id))


def no_sample_note(samples_tsv: str) -> str:
    """Why D is empty, for a table that has no row: every candidate's reason counted, or no candidate at all."""
    reasons = ", ".join(f"{why}: {n}" for why, n in sorted(reason_counts(read_tsv(samples_tsv)).items()))
    return f"No knowledge target has a sample in D ({reasons or 'no candidate image'}): nothing to show."
