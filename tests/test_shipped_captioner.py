"""The embedded default's captioner ships with the repository (models/embedded-captioner): these tests fail when the
shipped weights no longer fit the code or the default config (then regenerate them: README, The embedded
captioner), and check that the workflow refuses a config its training record does not match."""

from __future__ import annotations

import json

import pytest
import yaml

from kneurons.coco import image_records, load_coco
from kneurons.synth.evaluate import evaluate_captioner, quality_checks
from kneurons.synth.record import (
    code_mismatches,
    config_mismatches,
    read_record,
    shipped_model_problem,
    training_record,
)
from kneurons.synth.scenes import GENERATOR_VERSION, SPLIT_SEED_OFFSETS, split_annotations, write_split
from tests.helpers import DEFAULT_CONFIG, REPO, kneurons_lines, snakemake

DEFAULT = yaml.safe_load(DEFAULT_CONFIG.read_text())
SHIPPED = REPO / DEFAULT["model"]["path"]


@pytest.fixture(scope="module")
def record() -> dict:
    found = read_record(SHIPPED)
    assert found is not None, f"{SHIPPED}/training.json holds no training record"
    return found


def test_the_default_config_uses_the_shipped_captioner_and_does_not_train():
    assert DEFAULT["model"]["path"] == "models/embedded-captioner"
    assert DEFAULT["captioner"]["train"] is False
    assert (SHIPPED / "model.safetensors").is_file() and (SHIPPED / "config.json").is_file()


def test_the_shipped_record_is_the_default_configs_captioner_and_synth_sections(record):
    captioner = {k: v for k, v in DEFAULT["captioner"].items() if k != "train"}
    assert record["captioner"] == captioner  # architecture, steps, seed, precision setting, threads
    assert record["synth"] == DEFAULT["synth"]
    assert config_mismatches(record, DEFAULT) == []
    summary = json.loads((SHIPPED / "training.json").read_text())
    assert summary["torch_threads"] == DEFAULT["captioner"]["threads"]
    assert summary["prompt"] == DEFAULT["prompt"]
    assert summary["settings"]["steps"] == DEFAULT["captioner"]["steps"]
    assert summary["train_images"] == DEFAULT["synth"]["train_images"]


def test_the_shipped_record_names_the_training_split_the_current_code_draws(record):
    assert record["generator_version"] == GENERATOR_VERSION
    assert code_mismatches(record) == []  # the 6000 training scenes drawn again, their annotations digested


def test_a_record_that_the_code_would_not_make_is_named():
    synth = DEFAULT["synth"] | {"train_images": 5}
    shape = (synth["image_size"], synth["max_objects"], synth["margin"])
    coco = split_annotations(5, synth["seed"] + SPLIT_SEED_OFFSETS["train"], *shape)
    good = training_record(DEFAULT["captioner"], synth, coco)
    assert code_mismatches(good) == []
    other = training_record(DEFAULT["captioner"], synth, split_annotations(5, 99, *shape))
    assert code_mismatches(other) == [
        "the training split's annotations differ from what the code draws with these settings"
    ]
    assert code_mismatches(good | {"generator_version": GENERATOR_VERSION - 1})[0].startswith("generator version 0")


def test_the_written_split_has_the_annotations_the_record_digests(tmp_path):
    write_split(
        tmp_path / "a.json", tmp_path / "img", 6, seed=4, image_size=48, max_objects=3, margin=2, jpeg_quality=90
    )
    written = json.loads((tmp_path / "a.json").read_text())
    assert written == split_annotations(6, 4, 48, 3, 2)
    assert len(list((tmp_path / "img").glob("*.jpg"))) == 6


def test_each_changed_setting_is_named(record):
    changed = DEFAULT | {
        "captioner": DEFAULT["captioner"] | {"steps": 2000, "train": False},
        "synth": DEFAULT["synth"] | {"image_size": 64, "val_images": 50},  # val_images: not trained on
    }
    assert config_mismatches(record, changed) == [
        "captioner.steps: trained with 1400, the config has 2000",
        "synth.image_size: trained with 96, the config has 64",
    ]
    line = shipped_model_problem(SHIPPED, changed)
    assert line.startswith(f"config error at captioner: {SHIPPED} was trained with other settings (captioner.steps")
    assert "captioner.train: true" in line
    assert shipped_model_problem(SHIPPED, DEFAULT) is None
    assert shipped_model_problem(REPO / "config", DEFAULT) is None  # no training record: not ours to check


def test_the_workflow_refuses_a_changed_captioner_section_before_any_job(tmp_path):
    overlay = tmp_path / "steps.yaml"  # model.path is relative to the run's directory: here the repository's copy
    overlay.write_text(f"model:\n  path: {SHIPPED}\ncaptioner:\n  steps: 2000\n")
    proc = snakemake(tmp_path, "-n", "--cores", "1", configs=(overlay,))
    assert proc.returncode != 0
    lines = kneurons_lines(proc.stdout + proc.stderr)
    assert len(lines) == 1 and "captioner.steps: trained with 1400, the config has 2000" in lines[0], lines
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("dtype", ["auto", "float32"])
def test_the_shipped_captioner_passes_the_quality_gate_on_the_current_validation_split(tmp_path, dtype):
    """In the default's dtype (bfloat16 on a CPU with native bfloat16) and in float32 (a CPU without it)."""
    from kneurons.models import load_model

    s = DEFAULT["synth"]
    ann, images = tmp_path / "val.json", tmp_path / "val"
    seed = s["seed"] + SPLIT_SEED_OFFSETS["val"]
    write_split(ann, images, s["val_images"], seed, s["image_size"], s["max_objects"], s["margin"], s["jpeg_quality"])
    coco = load_coco(ann)
    names = [c["name"] for c in coco.loadCats(coco.getCatIds())]
    loaded = load_model(SHIPPED, dtype=dtype)
    result = evaluate_captioner(loaded, image_records(coco, images), DEFAULT["prompt"], names)
    checks = quality_checks(result, DEFAULT["captioner_quality"])
    assert all(c["met"] for c in checks.values()), checks


def test_training_is_refused_where_model_path_names_another_directory(tmp_path):
    overlay = tmp_path / "train.yaml"
    overlay.write_text("captioner:\n  train: true\n")  # model.path still the shipped captioner
    proc = snakemake(tmp_path, "-n", "--cores", "1", configs=(overlay,))
    assert proc.returncode != 0
    assert kneurons_lines(proc.stdout + proc.stderr) == [
        "kneurons: config error at model.path: captioner.train trains into results/model/captioner, not "
        "models/embedded-captioner: set model.path to results/model/captioner (config/train-captioner.yaml does) or "
        "captioner.train to false"
    ]
    train = snakemake(tmp_path, "-n", "--cores", "1", configs=(REPO / "config/train-captioner.yaml",))
    assert train.returncode == 0, train.stderr[-2000:]
    assert "train_captioner" in train.stdout and "synth_split" in train.stdout
