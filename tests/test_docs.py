"""Every Python block of the README and of docs/ runs as written, and examples/walkthrough.ipynb runs in a real
Jupyter kernel (nbclient), on the test configuration's run: in a scratch directory whose ``results`` is the run's
and whose ``models/embedded-captioner`` is the run's captioner (the test configuration trains its own), so the
examples' paths are the embedded default's."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", path.read_text(), flags=re.S | re.M)


BLOCKS = [(path, i, code) for path in DOCS for i, code in enumerate(python_blocks(path))]


def test_the_readme_and_the_api_docs_have_examples():
    assert {path.name for path, _, _ in BLOCKS} >= {"README.md", "api.md"}


def scratch(run_dir: Path, work: Path) -> Path:
    """``work`` laid out as the repository after a default run: the run's results and captioner."""
    (work / "results").symlink_to(run_dir / "results")
    (work / "models").mkdir()
    (work / "models/embedded-captioner").symlink_to(run_dir / "results/model/captioner")
    return work


@pytest.mark.parametrize(("path", "index", "code"), BLOCKS, ids=[f"{p.name}-{i}" for p, i, _ in BLOCKS])
def test_a_documented_example_runs(run_dir, tmp_path, path, index, code):
    scratch(run_dir, tmp_path)
    script = tmp_path / "example.py"
    script.write_text(code)
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{path.name}, Python block {index}:\n{proc.stderr[-3000:]}"
    assert proc.stdout.strip()  # every example prints what it found
    for png in re.findall(r'savefig\("([^"]+)"\)', code):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG", png


def test_the_notebook_runs_in_a_jupyter_kernel(run_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel's own inline backend, as in Jupyter
    (scratch(run_dir, tmp_path) / "examples").mkdir()
    notebook = nbformat.read(REPO / "examples/walkthrough.ipynb", as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells)  # committed without outputs
    client = NotebookClient(notebook, timeout=600, kernel_name="python3")
    client.execute(cwd=str(tmp_path / "examples"))  # raises CellExecutionError with the cell on any error
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    text = "".join(out.get("text", "") for cell in code for out in cell.outputs if out.output_type == "stream")
    assert "sets equal the run's files: True" in text
    for phrase in ("N_k ablated:", "control ablated:", "noise level", "N_k patched in:", "caption:"):
        assert phrase in text, phrase
    figures = [cell for cell in code if "heatmap(" in cell.source or "subplots(" in cell.source]
    assert len(figures) == 2
    for cell in figures:  # each figure cell shows an image
        assert any("image/png" in out.get("data", {}) for out in cell.outputs), cell.source
