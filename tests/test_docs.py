"""Every Python block of the README and of docs/ runs as written on the test configuration's run: in a scratch
directory whose ``results`` is the run's and whose ``models/embedded-captioner`` is the run's captioner (the test
configuration trains its own), so the examples' paths are the embedded default's."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", path.read_text(), flags=re.S | re.M)


BLOCKS = [(path, i, code) for path in DOCS for i, code in enumerate(python_blocks(path))]


def test_the_readme_and_the_api_docs_have_examples():
    assert {path.name for path, _, _ in BLOCKS} >= {"README.md", "api.md"}


@pytest.mark.parametrize(("path", "index", "code"), BLOCKS, ids=[f"{p.name}-{i}" for p, i, _ in BLOCKS])
def test_a_documented_example_runs(run_dir, tmp_path, path, index, code):
    (tmp_path / "results").symlink_to(run_dir / "results")
    (tmp_path / "models").mkdir()
    (tmp_path / "models/embedded-captioner").symlink_to(run_dir / "results/model/captioner")
    script = tmp_path / "example.py"
    script.write_text(code)
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{path.name}, Python block {index}:\n{proc.stderr[-3000:]}"
    assert proc.stdout.strip()  # every example prints what it found
    for png in re.findall(r'savefig\("([^"]+)"\)', code):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG", png
