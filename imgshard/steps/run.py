"""A job's process: its stderr in its log, one line on the terminal when it fails, and its signals.

SIGTERM and SIGINT raise ``Interrupted``, so that every ``finally`` on the
way out removes temporary files and shared memory.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import traceback

from ..errors import DiskFull, ImgshardError
from .args import job_from_argv


class Interrupted(BaseException):
    """SIGTERM or SIGINT arrived; raised so that every ``finally`` cleans up."""


def _interrupt(signum, frame):
    # From here on the finally blocks clean up. A second signal (Snakemake sends
    # its jobs SIGTERM after a Ctrl-C that reached the whole group) must not cut
    # that short and leave a temporary file or a segment behind.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise Interrupted(signal.Signals(signum).name)


def run_step(func, argv: list[str]) -> None:
    """What scripts/<step>.py does: ``func(job)`` for the job on its command line, logged to its log."""
    job = job_from_argv(argv)
    run_job(job.log, func, job)


def run_job(log_path: str, func, *args) -> None:
    """Run ``func(*args)`` with stderr (file descriptor 2, so C libraries and workers too) in the log.

    A failure ends the process with status 1 after one line on the terminal as
    well as in the log; an ImgshardError needs no traceback.
    """
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
    terminal = os.fdopen(os.dup(2), "w", buffering=1)
    log = open(log_path, "w", buffering=1)
    os.dup2(log.fileno(), 2)
    sys.stderr = log
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        func(*args)
    except DiskFull as e:
        # Every finally has run (temporary files and shared memory are gone), but
        # HDF5 may crash freeing a file whose write failed (h5py#914): skip finalizing.
        _fail(terminal, f"imgshard: {e}", leave=os._exit)
    except ImgshardError as e:
        _fail(terminal, f"imgshard: {e}")
    except OSError as e:
        if e.errno != errno.ENOSPC:
            traceback.print_exc()
            _fail(terminal, f"imgshard: unexpected error, traceback in {log_path}")
        _fail(terminal, f"imgshard: {e.filename or log_path}: disk full (No space left on device)")
    except Interrupted as e:
        _fail(terminal, f"imgshard: interrupted by {e}; outputs and shared memory removed", status=130)
    except Exception:
        traceback.print_exc()
        _fail(terminal, f"imgshard: unexpected error, traceback in {log_path}")


def _fail(terminal, message: str, status: int = 1, leave=sys.exit) -> None:
    print(message, file=sys.stderr, flush=True)
    print(message, file=terminal, flush=True)
    leave(status)




def seconds_since_process_start() -> float:
    """How long this process ran before now: python start-up, Snakemake's preamble, imports.

    Read from /proc, where both numbers count from boot: psutil's create_time
    adds a boot time rounded to the second.
    """
    with open("/proc/self/stat") as f:
        start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
