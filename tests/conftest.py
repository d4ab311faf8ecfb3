"""Shared fixtures: a small synthetic split and a tiny captioner trained on it for a few steps."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from kneurons.coco import image_records, load_coco
from kneurons.synth.captioner import CaptionerSettings, train_captioner
from kneurons.synth.scenes import write_split

PROMPT = "<image>The image shows a"
os.environ["TQDM_DISABLE"] = "1"  # the API's progress bars off in tests (and in the processes they start)
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
def run_dir(tmp_path_factory, worker_id) -> Path:
    """The whole workflow on config/test.yaml, run locally with 2 cores (tests/test_workflow.py, test_resume.py,
    test_slurm.py, test_api.py), once per test session: under pytest-xdist the first worker to ask makes it and
    the others wait on a file lock, then read the same directory (a failed run is reported to each)."""
    from filelock import FileLock

    from tests.helpers import snakemake

    shared = tmp_path_factory.getbasetemp() if worker_id == "master" else tmp_path_factory.getbasetemp().parent
    workdir, failed = shared / "run", shared / "run.failed"
    with FileLock(shared / "run.lock"):
        if not (workdir / "console.txt").exists() and not failed.exists():
            workdir.mkdir()
            proc = snakemake(workdir, "--cores", "2")
            if proc.returncode != 0:
                failed.write_text(proc.stderr[-3000:])
            else:
                (workdir / "console.txt").write_text(proc.stdout + proc.stderr)  # what the user saw
    assert not failed.exists(), failed.read_text()
    return workdir


# The files whose tests take longest, first: pytest-xdist (--dist loadfile) hands whole files to its workers in this
# order (two each to begin with), so the SLURM run and the test config's run start at once on the two workers.
SLOW_FIRST = ("test_slurm.py", "test_workflow.py", "test_families.py", "test_resume.py")


# The slow tier (pytest -m slow; README "Tests"): every test that needs the whole-workflow run (fixture run_dir), and
# the files of the SLURM and kill tests. ``pytest -m "not slow"`` is the fast tier a developer runs after a change.
SLOW_FILES = ("test_slurm.py", "test_resume.py")


def pytest_collection_modifyitems(items):
    for item in items:
        if "run_dir" in item.fixturenames or item.path.name in SLOW_FILES:
            item.add_marker(pytest.mark.slow)
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FIRST)))  # stable: each file keeps its order
