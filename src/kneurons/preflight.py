"""Checks the Snakefile runs before any job: config errors and missing paths as one line each; outputs a killed run
left without Snakemake's record of their job's end, and dumps that a crash or a bad disk left truncated (both are
then recomputed)."""

from __future__ import annotations

import base64
import json
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

from kneurons.errors import ModelError
from kneurons.families import family_for
from kneurons.h5io import is_complete
from kneurons.names import PACKAGED_BERTSCORE_MODEL


def schema_error_line(error: Exception) -> str | None:
    """One line for the jsonschema ValidationError behind ``error`` (Snakemake's validate raises a WorkflowError
    while handling it): the key path and what is wrong, e.g. "config error at noise.levels.0: -1 is less than or
    equal to the minimum of 0"; None if no ValidationError is behind it."""
    inner = error.__cause__ or error.__context__
    if not hasattr(inner, "absolute_path"):
        return None
    key = ".".join(str(p) for p in inner.absolute_path) or "(top level)"
    return f"config error at {key}: {inner.message}"


def missing_paths(config: Mapping, produced: Iterable[str]) -> list[str]:
    """One line per input path of ``config`` that is not on disk, naming its key; paths this workflow makes
    (``produced``) are left out."""
    produced = {os.path.normpath(p) for p in produced}
    wanted = {
        "data.annotations": (config["data"]["annotations"], "file"),
        "data.images": (config["data"]["images"], "directory"),
        "model.path": (config["model"]["path"], "directory"),
    }
    convert = config["model"].get("convert")
    if convert:  # model.path is made by rule convert_model from these
        produced.add(os.path.normpath(config["model"]["path"]))
        for key, kind in (("vit", "file"), ("checkpoint", "file"), ("llm", "directory"), ("vision_config", "file")):
            if convert.get(key):
                wanted[f"model.convert.{key}"] = (convert[key], kind)
    bert = config.get("metrics", {}).get("bertscore_model", PACKAGED_BERTSCORE_MODEL)
    if bert != PACKAGED_BERTSCORE_MODEL:
        wanted["metrics.bertscore_model"] = (bert, "directory")
    lines = []
    for key, (path, kind) in wanted.items():
        if os.path.normpath(path) in produced:
            continue
        exists = Path(path).is_file() if kind == "file" else Path(path).is_dir()
        if not exists:
            lines.append(f"config error at {key}: {kind} not found: {path}")
    return lines


def model_family_problem(path: str | os.PathLike) -> str | None:
    """Why the model directory ``path`` cannot be used, read from its config.json's ``model_type`` before any job (a
    refused or unknown family, kneurons.families); None if it can, or if there is no config.json yet."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return None
    try:
        family_for(str(json.loads(config.read_text()).get("model_type")), str(config))
    except ModelError as e:
        return str(e)
    return None


def incomplete_dumps(dump_dirs: Iterable[str | os.PathLike]) -> list[Path]:
    """The HDF5 files under the finished dump directories ``dump_dirs`` (each ``results/<kind>/<k>``) that are
    truncated or were never completed."""
    return [h5 for d in dump_dirs for h5 in sorted(Path(d).glob("*.h5")) if not is_complete(h5)]


def interrupted_outputs(state_dir: str | os.PathLike = ".snakemake") -> list[Path]:
    """The outputs on disk whose job a killed run started and never recorded as finished, from Snakemake's
    markers under ``state_dir``/incomplete (one file per output named by its path in URL-safe base64, split into
    folders whose names start with "@" when longer than a file name may be). Empty while ``state_dir``/locks holds
    a lock: a running instance's jobs are marked too, and the directory is not this run's.

    Snakemake's ``--rerun-incomplete`` looks for such outputs before the checkpoints are evaluated, so it misses
    every job that comes after one (here every per-target job): the output would stay, unrecorded, and a later
    change of its parameters would not rerun it."""
    state = Path(state_dir)
    if any((state / "locks").glob("*.lock")):
        return []
    root = state / "incomplete"
    found = []
    for marker in sorted(root.rglob("*")):
        if not marker.is_file() or marker.name == "migration_underway":
            continue
        encoded = "".join(part.removeprefix("@") for part in marker.relative_to(root).parts)
        path = Path(base64.urlsafe_b64decode(encoded).decode())
        if path.exists():
            found.append(path)
    return found


DRY = "a run (not a dry run) recomputes it"  # what a dry run says of an output a run will discard


def discard_interrupted(outputs: Iterable[Path], dry_run: bool = False) -> list[str]:
    """Remove the ``outputs`` of interrupted jobs (files or directories), so that Snakemake reruns their jobs;
    one line per output. A ``dry_run`` removes nothing and says that a run will."""
    done = DRY if dry_run else "recomputed"
    lines = []
    for path in outputs:
        lines.append(f"{path}: left by a job that an interrupted run never recorded as finished; {done}")
        if not dry_run:
            _remove(path)
    return lines


def discard_dump_dirs(bad: Iterable[Path], dry_run: bool = False) -> list[str]:
    """Remove the directories holding ``bad`` dumps, so that Snakemake recomputes them; one line per file. A
    ``dry_run`` removes nothing and says that a run will."""
    lines = []
    for h5 in bad:
        done = DRY if dry_run else "recomputed"
        lines.append(f"{h5}: truncated or incomplete HDF5 dump; {h5.parent}: {done}")
        if not dry_run:
            _remove(h5.parent)
    return lines


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
