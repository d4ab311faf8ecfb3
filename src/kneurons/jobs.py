"""The start of every workflow job: its log file and its thread budget (the library never imports snakemake)."""

from __future__ import annotations

import logging
import os
import sys
import traceback
from types import TracebackType
from typing import Any, TextIO

from kneurons.errors import KneuronsError


def _report_errors(rule: str, log: str, console: TextIO) -> None:
    """Make an uncaught exception end the job with one line on the console (Snakemake's terminal).

    A KneuronsError (bad input) is that line alone; anything else also leaves its traceback in the log.
    """

    def hook(kind: type[BaseException], err: BaseException, tb: TracebackType | None) -> None:
        if isinstance(err, KneuronsError):
            line = f"kneurons: error in rule {rule}: {err}"
        else:
            traceback.print_exception(kind, err, tb, file=sys.stderr)
            line = f"kneurons: {kind.__name__} in rule {rule}: {err} (traceback in {log})"
        print(line, file=sys.stderr)
        print(line, file=console)

    sys.excepthook = hook


def start_job(job: Any) -> logging.Logger:
    """Send this job's logging and stderr to ``job.log[0]``, give torch ``job.threads`` threads (if the job's
    modules imported torch: import them before calling this) and report an uncaught error as one line on the
    console (the process still exits non-zero).

    ``job`` is the ``snakemake`` object of a script (anything with ``log``, ``threads`` and ``rule``).
    """
    stream = open(job.log[0], "w", buffering=1)  # noqa: SIM115 - lives as long as the job
    _report_errors(getattr(job, "rule", "?"), job.log[0], sys.stderr)
    sys.stderr = stream
    logging.basicConfig(stream=stream, level=logging.INFO, format="%(asctime)s %(message)s", force=True)
    logger = logging.getLogger("kneurons")
    logger.info("PYTHONHASHSEED=%s", os.environ.get("PYTHONHASHSEED", "random"))
    torch = sys.modules.get("torch")  # only jobs that compute with torch import it (importing it costs seconds)
    if torch is not None:
        torch.set_num_threads(max(1, int(job.threads)))
        torch.set_num_interop_threads(1)
        logger.info("torch threads: %d", torch.get_num_threads())
    return logger


def console(message: str) -> None:
    """Show ``message`` on the console Snakemake runs in (prefixed "kneurons: ") and in the job's log."""
    logging.getLogger("kneurons").info(message)
    print(f"kneurons: {message}", file=sys.__stderr__, flush=True)
