"""Running this repository's Snakefile from tests."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO / "config" / "config.yaml"
TEST_CONFIG = REPO / "config" / "test.yaml"


def snakemake(workdir: Path, *args: str, configs: tuple[Path, ...] = (TEST_CONFIG,)) -> subprocess.CompletedProcess:
    """Run snakemake on this repository's Snakefile in ``workdir`` with the default config plus ``configs``."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir)]
    cmd += ["--configfile", str(DEFAULT_CONFIG), *map(str, configs), *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)


def job_counts(output: str) -> dict[str, int]:
    """The "Job stats" table of a snakemake run or dry run, as {rule: count}."""
    table = output.split("Job stats:")[-1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m[1] != "total"}


def kneurons_lines(output: str) -> list[str]:
    """The lines the workflow's own error reporting printed (prefix "kneurons: ")."""
    return [ln for ln in output.splitlines() if ln.startswith("kneurons: ")]
