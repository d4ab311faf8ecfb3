"""A known kill point for the resume test (tests/test_workflow.py), loaded by every Python process that has this
folder on PYTHONPATH and idle unless KNEURONS_STOP_AT is set to ``<script>|<marker file>``.

Then a workflow job running ``workflow/scripts/<script>.py`` stops at its first ``os.replace`` (the moment a
finished temporary file or directory is renamed onto its final name: a dump's first HDF5 file inside its
temporary directory, a perturbation file's whole temporary): it writes the marker, with the destination, and
waits to be killed. So the test kills a job at a known point of its write, not wherever a poll happens to land.
"""

import os
import sys

_SPEC = os.environ.get("KNEURONS_STOP_AT", "")
if _SPEC and sys.argv and sys.argv[0].endswith(f".{_SPEC.split('|')[0]}.py"):
    import time

    _marker = _SPEC.split("|", 1)[1]

    def _stop_before_replace(src, dst, *args, **kwargs):
        try:
            fd = os.open(_marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        except FileExistsError:  # another job stopped first: this one waits too
            pass
        else:
            os.write(fd, os.fsencode(f"{src}\n{dst}\n"))
            os.close(fd)
        while True:
            time.sleep(60)

    os.replace = _stop_before_replace
