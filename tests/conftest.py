"""Shared fixtures: a small synthetic split and a tiny captioner trained on it for a few steps."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from kneurons.coco import image_records, load_coco
from kneurons.synth.captioner import CaptionerSettings, train_captioner
from kneurons.synth.scenes import write_split

PROMPT = "<image>The image shows a"
TINY = CaptionerSettings(
    image_size=48,
    patch_size=6,
    vision_hidden=16,
    hidden=32,
    intermediate=48,
    layers=2,
    heads=2,
    steps=60,
    batch_size=8,
    lr=0.01,
    warmup=5,
)


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_split(tmp_path_factory) -> tuple[Path, Path]:
    """A 12-image synthetic split at 48 px: (annotations JSON, image directory)."""
    root = tmp_path_factory.mktemp("split")
    write_split(
        root / "instances.json", root / "images", 12, seed=3, image_size=48, max_objects=3, margin=2, jpeg_quality=95
    )
    return root / "instances.json", root / "images"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_split) -> Path:
    """A tiny captioner (2 decoder layers, P = 64) trained for 60 steps and saved with save_pretrained."""
    out = tmp_path_factory.mktemp("model") / "captioner"
    records = image_records(load_coco(tiny_split[0]), tiny_split[1])
    train_captioner(records, PROMPT, out, TINY, log=lambda _m: None)
    return out


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> Path:
    """The whole workflow on config/test.yaml, run locally with 2 cores (tests/test_workflow.py, test_slurm.py)."""
    from tests.helpers import snakemake

    workdir = tmp_path_factory.mktemp("run")
    proc = snakemake(workdir, "--cores", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (workdir / "console.txt").write_text(proc.stdout + proc.stderr)  # what the user saw
    return workdir
