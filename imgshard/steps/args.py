"""A rule's command line as one job object, and the files long settings spill into.

Every rule runs ``python scripts/<step>.py name=value... SETTINGS name=value...``
as a ``shell:`` command (``get_run`` and ``get_job`` in workflow/rules/common.smk).
SETTINGS is JSON: what changes the job's output, so that a changed setting
reruns it. The name=value pairs are its files, its log, and what may change
without rerunning it (threads, resources, how workers start).
``job_from_argv`` turns them into one object. A ``script:`` job would import
Snakemake itself for its preamble: 0.1 s of CPU per job, paid by every shard
of every build and rerun.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import time
from types import SimpleNamespace

from ..temp import remove_stale_temps, temp_name

# Linux takes at most 128 KiB in one argument (MAX_ARG_STRLEN), and Snakemake
# hands the whole shell command to bash as one. A larger job (the gather of
# thousands of shards, or of thousands of images with no labels) goes in a file
# named by its content, so that its params still change exactly when it does.
INLINE_MAX = 32 * 1024
SPILL_DIR = os.path.join(".snakemake", "imgshard-jobs")
# A settings change leaves the old file behind. Every run refreshes the files
# its jobs refer to, so one untouched this long belongs to no job any more:
# prune_spilled removes it. Not every file this run did not refer to: another
# run in the same directory (another target) may be about to read its own.
SPILL_MAX_AGE_DAYS = 7


def job_argument(settings: dict, spill_dir: str = SPILL_DIR) -> str:
    """A job's settings as the first argument of its script: JSON, or @file when it is long."""
    text = json.dumps(settings, sort_keys=True)
    if len(text) <= INLINE_MAX:
        return text
    path = os.path.join(spill_dir, hashlib.sha256(text.encode()).hexdigest() + ".json")
    try:
        os.utime(path)  # in use again
    except FileNotFoundError:
        os.makedirs(spill_dir, exist_ok=True)
        remove_stale_temps(glob.escape(path))
        tmp = temp_name(path)
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    return "@" + path


def prune_spilled(spill_dir: str = SPILL_DIR, max_age_days: float = SPILL_MAX_AGE_DAYS) -> int:
    """Remove the job files (and a killed writer's temporary files) no run has used for ``max_age_days``; how many."""
    cutoff = time.time() - max_age_days * 86400
    removed = 0
    try:
        entries = list(os.scandir(spill_dir))
    except FileNotFoundError:
        return 0
    for entry in entries:
        try:
            if entry.is_file() and entry.stat().st_mtime < cutoff:
                os.unlink(entry.path)
                removed += 1
        except FileNotFoundError:  # another run pruned it first
            pass
    return removed + len(remove_stale_temps(os.path.join(glob.escape(spill_dir), "*")))


def job_from_argv(argv: list[str]) -> SimpleNamespace:
    """name=value pairs and one SETTINGS argument as a job: ``job.params.pixels``, ``job.out``, ``job.threads``.

    SETTINGS is JSON, or @file (see job_argument). A value of digits is an
    integer (threads, resources), True and False are booleans, the others are
    strings (paths, names).
    """
    job = SimpleNamespace()
    for arg in argv:
        name, equals, value = arg.partition("=")
        if arg.startswith("@"):
            with open(arg[1:]) as f:
                job.params = SimpleNamespace(**json.load(f))
        elif arg.startswith("{"):
            job.params = SimpleNamespace(**json.loads(arg))
        elif equals and name.isidentifier():
            setattr(job, name, int(value) if value.isdigit() else {"True": True, "False": False}.get(value, value))
        else:
            raise ValueError(f"not a name=value pair nor the job's settings: {arg!r}")
    return job


