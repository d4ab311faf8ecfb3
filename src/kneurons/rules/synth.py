"""The rules of rules/synth.smk: the synthetic COCO-format splits, training the embedded captioner on one and
evaluating it on another."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path

from kneurons.coco import image_records, load_coco
from kneurons.io import write_json
from kneurons.models import LoadedModel
from kneurons.synth import captioner, evaluate
from kneurons.synth.record import training_record
from kneurons.synth.scenes import write_split


def synth_split(n_images: int, seed: int, synth: Mapping, out_json: str, image_dir: str) -> None:
    """Rule synth_split: one synthetic COCO-format split of ``n_images`` scenes drawn from ``seed`` (JPEGs in
    ``image_dir``, the instances JSON ``out_json``); ``synth``: the config's image size, objects, margin, quality."""
    scene = (synth["image_size"], synth["max_objects"], synth["margin"], synth["jpeg_quality"])
    write_split(out_json, image_dir, n_images, seed, *scene)


def train_captioner(
    annotations: str, images: str, prompt: str, settings: Mapping, record: Mapping, out_dir: str, log: Callable
) -> dict:
    """Rule train_captioner: the embedded captioner trained on the split (``settings``: the config's captioner
    section and the image size), written to ``out_dir`` with its training record (``record``: the config sections
    it was trained under); progress lines go to ``log``. Returns the training summary."""
    split = json.loads(Path(annotations).read_text())
    return captioner.train_captioner(
        image_records(load_coco(annotations), images),
        prompt=prompt,
        out_dir=out_dir,
        settings=captioner.CaptionerSettings(**settings),
        log=log,
        provenance=training_record(**record, train_annotations=split),
    )


def evaluate_captioner(
    loaded: LoadedModel,
    annotations: str,
    images: str,
    prompt: str,
    quality: Mapping,
    log: logging.Logger,
    log_path: str,
    out_json: str,
) -> dict:
    """Rule evaluate_captioner: held-out mention precision / recall, the removal constraints and FFN ablation of
    the loaded captioner on the split, with its training record, written to ``log``; raises (naming
    ``log_path``) if a ``quality`` gate fails, else writes ``out_json``. Returns the result."""
    coco = load_coco(annotations)
    names = [c["name"] for c in coco.loadCats(coco.getCatIds())]
    result = evaluate.evaluate_captioner(loaded, image_records(coco, images), prompt, names)
    result["training"] = json.loads((loaded.path / "training.json").read_text())
    result["quality"] = evaluate.quality_checks(result, quality)
    log.info("eval: %s", result)
    evaluate.require_quality(result["quality"], log_path)
    write_json(out_json, result)
    return result
