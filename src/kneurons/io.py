"""Reading and writing the workflow's plain files (TSV, JSON, text, Markdown tables): outputs appear whole or not at
all."""

from __future__ import annotations

import csv
import glob
import json
import os
import shutil
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    On any exception the temporary file (or directory) is removed, so no partial output is left behind; one
    left by a killed process (SIGKILL runs no cleanup) is removed the next time ``path`` is written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.tmp*"):
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        if tmp.is_dir() and path.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def per_image_files(directory: str | os.PathLike, suffix: str) -> list[Path]:
    """The files ``{image_id}{suffix}`` of a per-sample output directory, in image-id order."""
    return sorted(Path(directory).glob(f"*{suffix}"), key=lambda p: int(p.name.removesuffix(suffix)))


def write_tsv_rows(path: str | os.PathLike, rows: Iterable[dict], fieldnames: list[str], delimiter: str = "\t") -> None:
    """Write dict rows as a tab-separated (or ``delimiter``-separated) file with a header line, atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fieldnames, delimiter=delimiter, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def read_tsv_rows(path: str | os.PathLike, delimiter: str = "\t") -> list[dict]:
    """The rows of a file written by write_tsv_rows, as dicts of strings."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter=delimiter))


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path``, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path: str | os.PathLike, data: dict) -> None:
    """Write ``data`` as indented JSON, atomically."""
    write_text(path, json.dumps(data, indent=1))


def markdown_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """A GitHub-flavoured Markdown table; floats with 3 decimals."""

    def cell(v: object) -> str:
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "".join("| " + " | ".join(cell(r[c]) for c in columns) + " |\n" for r in rows)
