"""Where a captioner's weights come from: the training record written beside them, and the checks that the record
still fits the config and the code (the shipped embedded captioner is used without retraining).

The record is the ``provenance`` part of ``training.json``: the config's ``captioner`` section (without the ``train``
switch) and ``synth`` section, the scene generator's version and the SHA-256 of the training split's annotations.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from kneurons.synth.scenes import GENERATOR_VERSION, SPLIT_SEED_OFFSETS, annotations_digest, split_annotations

# The synth keys the training split does not depend on.
NOT_TRAINED_ON = ("val_images",)
TRAIN_SWITCH = "train"
TRAINING_SUMMARY = "training.json"  # written by kneurons.synth.captioner.train_captioner


def training_record(captioner: Mapping, synth: Mapping, train_annotations: dict) -> dict:
    """The record of a training run on the split whose COCO dict is ``train_annotations``, with the config's
    ``captioner`` and ``synth`` sections."""
    return {
        "captioner": {k: v for k, v in captioner.items() if k != TRAIN_SWITCH},
        "synth": dict(synth),
        "generator_version": GENERATOR_VERSION,
        "train_annotations_sha256": annotations_digest(train_annotations),
    }


def trained_here(model_dir: str | Path) -> bool:
    """Whether ``model_dir`` holds a captioner trained by this workflow (its training.json)."""
    return (Path(model_dir) / TRAINING_SUMMARY).is_file()


def read_record(model_dir: str | Path) -> dict | None:
    """The training record in ``model_dir``/training.json, or None where the directory holds none (a model not
    trained by this workflow, or trained before records were kept)."""
    if not trained_here(model_dir):
        return None
    return json.loads((Path(model_dir) / TRAINING_SUMMARY).read_text()).get("provenance")


def config_mismatches(record: Mapping, config: Mapping) -> list[str]:
    """The config keys at which ``config`` differs from what the model was trained with, one phrase each
    ("captioner.steps: trained with 1400, the config has 2000")."""

    def flat(captioner: Mapping, synth: Mapping) -> dict:
        keys = {f"captioner.{k}": v for k, v in captioner.items() if k != TRAIN_SWITCH}
        return keys | {f"synth.{k}": v for k, v in synth.items() if k not in NOT_TRAINED_ON}

    trained, now = flat(record["captioner"], record["synth"]), flat(config["captioner"], config["synth"])
    return [
        f"{key}: trained with {trained.get(key)!r}, the config has {now.get(key)!r}"
        for key in sorted(trained.keys() | now.keys())
        if trained.get(key) != now.get(key)
    ]


def code_mismatches(record: Mapping) -> list[str]:
    """Where the current code would not make the training split the record names, one phrase each: another
    generator version, or annotations of another digest (the split's scenes are drawn again, no image is written:
    about 10 s for the default's 6000 images)."""
    problems = []
    if record["generator_version"] != GENERATOR_VERSION:
        problems.append(f"generator version {record['generator_version']}, the code's is {GENERATOR_VERSION}")
    synth = record["synth"]
    coco = split_annotations(
        synth["train_images"], synth["seed"] + SPLIT_SEED_OFFSETS["train"], synth["image_size"], synth["max_objects"],
        synth["margin"],
    )  # fmt: skip
    if annotations_digest(coco) != record["train_annotations_sha256"]:
        problems.append("the training split's annotations differ from what the code draws with these settings")
    return problems


def shipped_model_problem(model_dir: str | Path, config: Mapping) -> str | None:
    """Why a model trained by this workflow does not fit the config it is used with (the config's ``captioner`` or
    ``synth`` section changed and ``captioner.train`` is off), as one line; None if it fits, or if ``model_dir``
    holds no training record."""
    record = read_record(model_dir)
    if record is None:
        return None
    differ = config_mismatches(record, config)
    if not differ:
        return None
    return (
        f"config error at captioner: {model_dir} was trained with other settings ({'; '.join(differ)}): set "
        "captioner.train: true to train a captioner for them (config/train-captioner.yaml), or restore them"
    )
