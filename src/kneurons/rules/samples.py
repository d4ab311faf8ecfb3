"""The rules of rules/samples.smk: the knowledge targets, the image check, inpainting k out, captioning the
candidates (the one rule here that runs the model), the paper's three constraints and the sample table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from kneurons import imagecheck, samples
from kneurons.coco import image_records, load_coco, read_image, read_record, records_by_id
from kneurons.jobs import console
from kneurons.protocol import Captioning
from kneurons.samples import Knowledge, read_knowledge, read_tsv, write_tsv

if TYPE_CHECKING:
    from kneurons.models import LoadedModel

# Model code (torch, transformers) is imported inside the functions of the rules that load a model, so the jobs of
# the other rules start without it (bench/job_startup.py).


def knowledge(annotations: str, spec: str | list[str], per_supercategory: int, out_tsv: str) -> list[Knowledge]:
    """Checkpoint knowledge: resolve the knowledge targets (``spec``: names or "auto") against the COCO
    categories and list them (TSV)."""
    targets = samples.resolve_knowledge(load_coco(annotations), spec, annotations, per_supercategory)
    samples.write_knowledge(out_tsv, targets)
    return targets


def check_images(
    annotations: str, images: str, knowledge_tsv: str, max_candidates: int, bad_images: str, out: str
) -> list[str]:
    """Rule check_images: check every candidate image of every target once (kneurons.imagecheck); returns the
    problem lines (with ``bad_images`` "stop" a bad image raises DataError after ``console`` showed them)."""
    records = image_records(load_coco(annotations), images)
    chosen = [
        r for t in read_knowledge(knowledge_tsv) for r in samples.candidate_records(records, t.name, max_candidates)
    ]
    rows = imagecheck.check_images(chosen)
    lines = imagecheck.problem_lines(rows)
    for line in lines:
        console(line)
    imagecheck.write_check(out, rows, lines, bad_images)
    return lines


def inpaint(
    annotations: str, images: str, name: str, checked: str, options: Mapping, out_tsv: str, out_dir: str
) -> None:
    """Rule inpaint: inpaint k (``name``) out of its candidate images (``options``: max_candidates, mask, dilate,
    radius; those the image check ``checked`` found bad are rejected with its reason); list them with their other
    objects."""
    records = image_records(load_coco(annotations), images)
    rows = samples.inpaint_candidates(
        records,
        name,
        out_dir,
        max_candidates=options["max_candidates"],
        source=options["mask"],
        dilate=options["dilate"],
        radius=options["radius"],
        bad_images=imagecheck.read_problems(checked),
    )
    write_tsv(out_tsv, rows)


def caption_candidates(
    loaded: LoadedModel, annotations: str, images: str, candidates_tsv: str, captioning: Captioning, out_tsv: str
) -> None:
    """Rule caption_candidates: caption each candidate's original and inpainted image (batched), keeping the ids
    the model emitted for the original's caption; candidates already rejected (an unusable box) stay
    uncaptioned."""
    from kneurons.generation import emitted_captions

    rows = read_tsv(candidates_tsv)
    todo = [r for r in rows if r.status != "rejected"]
    records = records_by_id(annotations, images)
    originals = [read_record(records[r.image_id]) for r in todo]
    inpainted = [read_image(r.inpainted) for r in todo]
    pixels = originals + inpainted
    captions = emitted_captions(loaded, pixels, captioning.prompt, **captioning.generation) if todo else []
    for i, r in enumerate(todo):
        (r.caption, ids), (r.inpainted_caption, _) = captions[i], captions[len(todo) + i]
        r.caption_ids = " ".join(map(str, ids))
    write_tsv(out_tsv, rows)


def select_samples(captioned_tsv: str, n: int, synonyms: Sequence[str], out_tsv: str) -> dict[str, int]:
    """Checkpoint select_samples: judge the three constraints and keep the first ``n`` passing candidates.

    Returns how many candidates ended with each reason (the selected ones under "selected").
    """
    judged = samples.select_samples(read_tsv(captioned_tsv), n, synonyms)
    write_tsv(out_tsv, judged)
    return samples.reason_counts(judged)


def sample_table(selected_tsvs: Sequence[str], out_tsv: str) -> None:
    """Rule sample_table: every target's candidates, selected or with the reason they were not, in one TSV."""
    write_tsv(out_tsv, [r for p in selected_tsvs for r in read_tsv(p)])
