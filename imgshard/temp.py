"""Temporary files: every file is written as ``<name>.tmp-<pid>`` and renamed into place only when complete.

A writer killed hard (``kill -9``, the machine going down) leaves its
temporary file behind. The next writer of the same name removes those whose
process is gone, and never one of a live process (another run, still writing).
"""

from __future__ import annotations

import contextlib
import glob
import os

import psutil


def temp_name(path: str) -> str:
    return f"{path}.tmp-{os.getpid()}"


def remove_stale_temps(pattern: str) -> list[str]:
    """Remove the temporary files matching ``pattern`` + ``.tmp-<pid>`` whose writer is gone; their paths.

    ``pattern`` is a glob: ``glob.escape`` a plain path first.
    """
    removed = []
    for tmp in glob.glob(pattern + ".tmp-*"):
        pid = tmp.rsplit("-", 1)[-1]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
                removed.append(tmp)
    return removed
