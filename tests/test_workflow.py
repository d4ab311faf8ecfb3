"""End to end: the Snakemake DAG on the small test config, from synthetic data to eval.json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from kneurons.coco import load_coco

REPO = Path(__file__).resolve().parents[1]


def snakemake(
    workdir: Path, *args: str, extra_config: Path = REPO / "config" / "test.yaml"
) -> subprocess.CompletedProcess:
    """Run snakemake on this repository's Snakefile in ``workdir`` with the default config plus ``extra_config``."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir)]
    cmd += ["--configfile", str(REPO / "config" / "config.yaml"), str(extra_config), *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("run")
    proc = snakemake(workdir, "--cores", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir


def test_default_dag_runs_to_eval(run_dir):
    ev = json.loads((run_dir / "results/model/eval.json").read_text())
    for key in ("precision", "recall", "constraint_pass_share", "ablated_recall"):
        assert 0.0 <= ev[key] <= 1.0
    assert ev["held_out_images"] == 10
    assert ev["training"]["settings"]["steps"] == 4
    coco = load_coco(run_dir / "results/synth/annotations/instances_val.json")
    assert len(coco.getImgIds()) == 10
    assert (run_dir / "results/model/captioner/config.json").is_file()


def test_nothing_left_to_do_after_a_run(run_dir):
    proc = snakemake(run_dir, "-n", "--cores", "1")
    assert proc.returncode == 0
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_schema_rejects_bad_values(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("captioner:\n  steps: 0\n")
    proc = snakemake(tmp_path, "-n", extra_config=bad)
    assert proc.returncode != 0
    assert "steps" in proc.stdout + proc.stderr
