"""HDF5 dumps (h5py): written whole under a temporary name, then renamed; a ``complete`` attribute marks success."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from kneurons import __version__
from kneurons.errors import DumpError
from kneurons.io import atomic_path


def write_dump(path: str | os.PathLike, datasets: dict[str, np.ndarray], attrs: dict) -> None:
    """Write ``datasets`` (3-D (L, ...) arrays chunked one layer per chunk) and ``attrs`` to ``path``."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for name, data in datasets.items():
            chunks = (1, *data.shape[1:]) if data.ndim == 3 else None
            f.create_dataset(name, data=data, chunks=chunks, track_times=False)
        for key, value in {**attrs, "kneurons_version": __version__}.items():
            f.attrs[key] = value
        f.attrs["complete"] = True


def is_complete(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a readable dump that was written to the end."""
    try:
        with h5py.File(path, "r") as f:
            return bool(f.attrs.get("complete", False))
    except OSError:
        return False


def read_dump(path: str | os.PathLike, names: list[str] | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """The datasets ``names`` (all if None, none if empty) and the attributes of a dump; DumpError naming the file
    if incomplete."""
    path = Path(path)
    if not is_complete(path):
        raise DumpError(f"{path}: HDF5 dump is missing, truncated or incomplete; rerun snakemake to recompute it")
    with h5py.File(path, "r") as f:
        data = {n: f[n][()] for n in (list(f.keys()) if names is None else names)}
        return data, dict(f.attrs)
