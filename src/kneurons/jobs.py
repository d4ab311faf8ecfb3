"""The start of every workflow job: its log file and its thread budget (the library never imports snakemake)."""

from __future__ import annotations

import logging
import sys
from typing import Any

import torch

from kneurons.models import LoadedModel, load_model


def start_job(job: Any) -> logging.Logger:
    """Send this job's logging and stderr to ``job.log[0]`` and give torch ``job.threads`` threads.

    ``job`` is the ``snakemake`` object of a script (anything with ``log`` and ``threads``).
    """
    stream = open(job.log[0], "w", buffering=1)  # noqa: SIM115 - lives as long as the job
    sys.stderr = stream
    logging.basicConfig(stream=stream, level=logging.INFO, format="%(asctime)s %(message)s", force=True)
    torch.set_num_threads(max(1, int(job.threads)))
    torch.set_num_interop_threads(1)
    logger = logging.getLogger("kneurons")
    logger.info("threads: %d", torch.get_num_threads())
    return logger


def load_job_model(job: Any) -> LoadedModel:
    """The model of a job: ``job.input.model`` loaded with ``job.params.model``'s device and dtype."""
    opts = job.params.model
    grid = opts.get("grid")
    return load_model(
        job.input.model,
        device=opts.get("device", "cpu"),
        dtype=opts.get("dtype", "float32"),
        grid=tuple(grid) if grid else None,
    )
