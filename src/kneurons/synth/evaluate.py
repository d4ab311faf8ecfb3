"""Held-out evaluation of a captioner on COCO-format records: mentions, single-object removals, FFN ablation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from kneurons.captions import mentions
from kneurons.coco import ImageRecord, read_image
from kneurons.errors import ModelError
from kneurons.generation import generate_captions
from kneurons.hooks import edit_image_activations, zero_edit
from kneurons.inpaint import remove_objects
from kneurons.models import LoadedModel


def mention_scores(captions: Sequence[str], records: Sequence[ImageRecord], names: Sequence[str]) -> dict[str, float]:
    """Object-mention precision and recall of captions against each record's annotated category names."""
    tp = fp = fn = 0
    for caption, rec in zip(captions, records, strict=True):
        present = {a.category for a in rec.annotations}
        said = {n for n in names if mentions(caption, n)}
        tp += len(said & present)
        fp += len(said - present)
        fn += len(present - said)
    return {"precision": tp / max(1, tp + fp), "recall": tp / max(1, tp + fn), "mentions": tp + fp, "objects": tp + fn}


def removal_pass(original: str, inpainted: str, removed: str, others: Sequence[str]) -> bool:
    """The paper's three constraints for one removal: k in the original caption, not after inpainting,
    and every other object still mentioned."""
    return (
        mentions(original, removed) and not mentions(inpainted, removed) and all(mentions(inpainted, o) for o in others)
    )


def evaluate_captioner(
    loaded: LoadedModel, records: Sequence[ImageRecord], prompt: str, names: Sequence[str], batch_size: int = 64
) -> dict:
    """Measure a captioner on held-out records.

    Returns precision/recall of object mentions; the share of single-object removals (Telea on the object's
    box) that pass the three constraints; and recall with every decoder act_fn output zeroed at the image
    positions (O[:, image positions, :] = 0 for all layers).
    """
    images = [read_image(r.path) for r in records]
    captions = generate_captions(loaded, images, prompt, batch_size=batch_size)
    clean = mention_scores(captions, records, names)

    def ablate(input_ids):
        return edit_image_activations(loaded.act_fns, loaded.image_positions(input_ids), zero_edit)

    ablated = mention_scores(
        generate_captions(loaded, images, prompt, batch_size=batch_size, context=ablate), records, names
    )

    removals, removed_images = [], []
    for i, rec in enumerate(records):
        for j, ann in enumerate(rec.annotations):
            removals.append((i, ann.category, [a.category for k, a in enumerate(rec.annotations) if k != j]))
            removed_images.append(remove_objects(images[i], [ann], source="box", dilate=1))
    inpainted = generate_captions(loaded, removed_images, prompt, batch_size=batch_size)
    passed = [
        removal_pass(captions[i], cap, k, others) for (i, k, others), cap in zip(removals, inpainted, strict=True)
    ]
    return {
        "held_out_images": len(records),
        "precision": round(clean["precision"], 4),
        "recall": round(clean["recall"], 4),
        "removals": len(removals),
        "constraint_pass_share": round(float(np.mean(passed)), 4),
        "ablated_recall": round(ablated["recall"], 4),
        "ablated_precision": round(ablated["precision"], 4),
        "ablation_recall_ratio": round(ablated["recall"] / max(clean["recall"], 1e-9), 4),
        "examples": [{"image_id": r.id, "caption": c} for r, c in zip(records[:8], captions[:8], strict=True)],
    }


# eval.json's scores that config key captioner_quality bounds: True for a least value, False for a most value
QUALITY_BOUNDS = {"precision": True, "recall": True, "constraint_pass_share": True, "ablation_recall_ratio": False}


def quality_checks(result: Mapping[str, float], bounds: Mapping[str, float]) -> dict[str, dict]:
    """Each bound of ``bounds`` (config ``captioner_quality``) against ``result`` (``evaluate_captioner``'s):
    {score: {"value", "bound", "at_least", "met"}}."""
    checks = {}
    for key, bound in bounds.items():
        at_least, value = QUALITY_BOUNDS[key], float(result[key])
        met = value >= bound if at_least else value <= bound
        checks[key] = {"value": value, "bound": bound, "at_least": at_least, "met": met}
    return checks


def require_quality(checks: Mapping[str, dict], where: str) -> None:
    """ModelError naming every unmet bound of ``checks`` (``quality_checks``) in one line; ``where`` says which
    evaluation (file or log) holds the numbers."""
    missed = [
        f"{key} {c['value']:g} {'<' if c['at_least'] else '>'} {c['bound']:g}"
        for key, c in checks.items()
        if not c["met"]
    ]
    if missed:
        raise ModelError(
            f"{where}: the trained captioner misses captioner_quality: {', '.join(missed)}; neurons found in it would "
            "mean little (train longer or larger, or lower the bounds knowingly)"
        )
