"""Running this repository's Snakefile from tests."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "config" / "config.yaml"
TEST_CONFIG = REPO / "config" / "test.yaml"
STOP_POINT = REPO / "tests" / "stop_point"


def stop_point_env(script: str, marker: Path) -> dict[str, str]:
    """The environment of a run whose jobs of ``workflow/scripts/{script}.py`` stop at their first rename and
    write ``marker`` (tests/stop_point/sitecustomize.py); an empty ``script`` stops nothing."""
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(STOP_POINT), os.environ.get("PYTHONPATH", "")])}
    return env | {"KNEURONS_STOP_AT": f"{script}|{marker}" if script else ""}


def snakemake(workdir: Path, *args: str, configs: tuple[Path, ...] = (TEST_CONFIG,)) -> subprocess.CompletedProcess:
    """Run snakemake on this repository's Snakefile in ``workdir`` with the default config plus ``configs``."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir)]
    cmd += ["--configfile", str(DEFAULT_CONFIG), *map(str, configs), *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)


def forged_ids(tokenizer, caption: str) -> str:
    """The caption_ids of a row whose caption a test forges: the caption's own tokens (what a model that wrote it
    after its prompt would have emitted), as stored in the sample table."""
    return " ".join(map(str, tokenizer(caption, add_special_tokens=False)["input_ids"]))


def job_counts(output: str) -> dict[str, int]:
    """The "Job stats" table of a snakemake run or dry run, as {rule: count}."""
    table = output.split("Job stats:")[-1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m[1] != "total"}


def kneurons_lines(output: str) -> list[str]:
    """The lines the workflow's own error reporting printed (prefix "kneurons: ")."""
    return [ln for ln in output.splitlines() if ln.startswith("kneurons: ")]


# What a run of the same config need not reproduce byte for byte: logs, the report (only test_report_builds makes
# it) and the two files that hold the training's wall time (compared without it).
TIMED = ("results/model/eval.json", "results/model/captioner/training.json")
UNREPRODUCED = ("results/logs/", "results/report.html", *TIMED)


# Snakemake's own empty marker in a directory() output, written in its bookkeeping after the job has ended: a run
# killed between a job's end (its output complete, renamed into place) and that step resumes without rerunning the
# job, and so without the marker. Not an output of the workflow.
SNAKEMAKE_MARKER = ".snakemake_timestamp"


def _outputs(workdir: Path) -> dict[str, Path]:
    return {
        str(p.relative_to(workdir)): p
        for p in (workdir / "results").rglob("*")
        if p.is_file() and p.name != SNAKEMAKE_MARKER
    }


def assert_same_outputs(a: Path, b: Path) -> int:
    """Every output of run ``b`` is byte-identical to run ``a``'s (neuron sets of every kind, every HDF5 dump, the
    trained weights, every perturbation file and table), the two runs made the same files, and eval.json differs
    in its wall time only. Returns the number of files compared."""
    ours, theirs = _outputs(a), _outputs(b)
    assert {k for k in ours if not k.startswith(UNREPRODUCED)} == {k for k in theirs if not k.startswith(UNREPRODUCED)}
    compared = 0
    for rel, path in ours.items():
        if not rel.startswith(UNREPRODUCED):
            assert theirs[rel].read_bytes() == path.read_bytes(), f"{rel} differs between the two runs"
            compared += 1
    for rel in TIMED:
        timeless = [json.loads((run / rel).read_text()) for run in (a, b)]
        for record in timeless:
            record.get("training", record).pop("train_seconds")
        assert timeless[0] == timeless[1], rel
    return compared
