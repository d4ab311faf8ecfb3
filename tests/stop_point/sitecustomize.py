"""Two test-only hooks, loaded by every Python process that has this folder on PYTHONPATH, each idle unless its
variable is set: a known kill point (KNEURONS_STOP_AT) and the SLURM test's status-check cap (below).

A known kill point for the resume tests (tests/test_workflow.py, test_slurm.py): KNEURONS_STOP_AT is
``<script>|<marker file>``.

Then a workflow job running ``workflow/scripts/<script>.py`` stops at its first ``os.replace`` (the moment a
finished temporary file or directory is renamed onto its final name: a dump's first HDF5 file inside its
temporary directory, a perturbation file's whole temporary): it writes the marker, with the destination, and
waits to be killed. So the test kills a job at a known point of its write, not wherever a poll happens to land.
"""

import os
import sys

_SPEC = os.environ.get("KNEURONS_STOP_AT", "")
if _SPEC and sys.argv and sys.argv[0].endswith(f".{_SPEC.split('|')[0]}.py"):
    import contextlib
    import time

    _marker = _SPEC.split("|", 1)[1]

    def _stop_before_replace(src, dst, *args, **kwargs):
        # the marker appears whole, or not at all (the test kills the run the moment it exists: a marker created
        # empty and written after was once read empty), and only the first job's: a hard link of a written file
        written = f"{_marker}.{os.getpid()}"
        with open(written, "w") as f:
            f.write(f"{src}\n{dst}\n")
        with contextlib.suppress(FileExistsError):  # another job stopped first: this one waits too
            os.link(written, _marker)
        os.unlink(written)
        while True:
            time.sleep(60)

    os.replace = _stop_before_replace

# The SLURM test's status checks (tests/test_slurm.py): snakemake-executor-plugin-slurm adds 10 s to the wait before
# its next sacct query each time a query finds no job finished, up to 180 s, a back-off sized for a shared cluster's
# scheduler; on the one-node test cluster, whose jobs take seconds, it only waits. With KNEURONS_STATUS_CHECK_CAP set
# (seconds), the wait never grows past it. The profile a site uses (profiles/slurm) is not touched.
_CAP = os.environ.get("KNEURONS_STATUS_CHECK_CAP", "")
if _CAP:
    import importlib.abc
    import importlib.util

    class _CappedStatusChecks(importlib.abc.MetaPathFinder):
        """Caps RemoteExecutor.next_seconds_between_status_checks (the interface every remote executor shares) as
        its module is imported."""

        MODULE = "snakemake_interface_executor_plugins.executors.remote"

        def find_spec(self, name, path, target=None):
            if name != self.MODULE:
                return None
            sys.meta_path.remove(self)
            spec = importlib.util.find_spec(name)
            run_module = spec.loader.exec_module

            def exec_module(module):
                run_module(module)
                wait = module.RemoteExecutor.next_seconds_between_status_checks
                capped = wait.setter(lambda executor, value: wait.fset(executor, min(value, float(_CAP))))
                module.RemoteExecutor.next_seconds_between_status_checks = capped

            spec.loader.exec_module = exec_module
            return spec

    sys.meta_path.insert(0, _CappedStatusChecks())
