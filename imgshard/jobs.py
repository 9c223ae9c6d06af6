"""What the rules' scripts call: the job Snakemake hands over turned into plain arguments, plus logging.

Kept apart from the steps themselves so that tests call the steps with plain
arguments and no Snakemake at all.

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

import errno
import glob
import hashlib
import json
import os
import signal
import sys
import time
import traceback
from types import SimpleNamespace

from .errors import DiskFull, ImgshardError


class Interrupted(BaseException):
    """SIGTERM or SIGINT arrived; raised so that every ``finally`` cleans up."""


def _interrupt(signum, frame):
    # From here on the finally blocks clean up. A second signal (Snakemake sends
    # its jobs SIGTERM after a Ctrl-C that reached the whole group) must not cut
    # that short and leave a temporary file or a segment behind.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise Interrupted(signal.Signals(signum).name)


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
        from .temp import remove_stale_temps, temp_name

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
    from .temp import remove_stale_temps

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


def geometry_from_params(pixels: dict):
    from .geometry import Geometry

    return Geometry(*pixels["shape"], resize=pixels["resize"], pad_value=pixels["pad_value"], reducing_gap=pixels["reducing_gap"])


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


def start_method(configured: str) -> str:
    """``auto`` is fork here: this process runs no OpenCV before its workers
    exist (the hazard fork has, see imgshard.workers.mp_context), and fork saves
    starting a fork server in every shard job."""
    return "fork" if configured == "auto" else configured


def decode_shard_job(job) -> None:
    from .build import decode_shard
    from .labels import FOLDERS, folder_labels, read_labels
    from .manifest import read as read_manifest

    startup = seconds_since_process_start()

    images_dir = job.params.images_dir
    entries = read_manifest(job.manifest)
    relpaths = [e.path for e in entries]
    sources = [os.path.join(images_dir, rel) for rel in relpaths]
    shard = job.params.shard
    result = decode_shard(
        sources,
        relpaths,
        job.out,
        geometry_from_params(job.params.pixels),
        shard=shard,
        shard_name=os.path.basename(job.out).removeprefix("shard-").removesuffix(".h5"),
        workers=job.threads,
        shm_budget_mb=job.shm_mb,
        jobs_at_once=getattr(job, "jobs_at_once", 1),
        compression=job.params.pixels["compression"],
        on_error=job.params.on_error,
        start_method=start_method(job.start_method),
        labels=(
            folder_labels(relpaths, job.params.classes) if job.params.labels == FOLDERS
            else read_labels(job.params.labels) if job.params.labels else None
        ),
        attrs={"shard": shard, "pixels": job.params.pixels},
        source_stats=[(e.size, e.mtime_ns) for e in entries] if job.reuse else None,
        progress=getattr(job, "progress", None),
    )
    rate = len(result.paths) / result.seconds if result.seconds else 0.0
    wrote = "a fresh part" if result.fresh else f"a part of {result.decoded + result.copied} rows ({result.copied} carried over)"
    print(
        f"shard {shard}: {len(result.paths)} images ({result.reused} reused), {len(result.skipped)} skipped,"
        f" {result.seconds:.2f} s, {rate:.1f} images/s"
        f" ({job.threads} workers, {result.buffers} x {result.buffer_rows}-image buffers; {wrote})",
        file=sys.stderr,
    )
    # One parseable line for the benchmark's account of where the time goes.
    timings = {
        "startup": round(startup, 3),
        "decode_wait": round(result.decode_wait, 3),
        "write": round(result.write, 3),
        "total": round(result.seconds, 3),
    }
    print(f"timings {json.dumps(timings)}", file=sys.stderr)
    write_json(job.stats, shard_stats(shard, sum(e.size for e in entries), job.out, result, timings))
    for path, reason in result.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)


def shard_stats(shard: int, source_bytes: int, index_path: str, result, timings: dict) -> dict:
    """One shard's stats file: counts, every skip with its reason, timings and bytes (as img2dataset keeps them)."""
    from .index import read_index

    reasons: dict[str, int] = {}
    for _, reason in result.skipped:
        key = reason.split(" (")[0]
        reasons[key] = reasons.get(key, 0) + 1
    folder = os.path.dirname(os.path.abspath(index_path))
    parts = {p: os.path.getsize(os.path.join(folder, p)) for p in read_index(index_path).parts}
    return {
        "shard": shard,
        "images": len(result.paths),
        "skipped": len(result.skipped),
        "skipped_by_reason": reasons,
        "decoded": result.decoded,
        "reused": result.reused,
        "added": result.added,
        "changed": result.changed,
        "removed": result.removed,
        "seconds": round(result.seconds, 3),
        "images_per_s": round(len(result.paths) / result.seconds, 2) if result.seconds else 0.0,
        "timings": timings,
        "source_bytes": source_bytes,
        # what its parts hold on disk, rows no image uses any more included
        "shard_bytes": sum(parts.values()),
        # each part's size: a run finds a part cut short before it trusts the shard (publish.redo_what_is_damaged)
        "parts": parts,
    }


def write_json(path: str, data) -> None:
    from .temp import remove_stale_temps, temp_name

    remove_stale_temps(glob.escape(path))
    tmp = temp_name(path)
    try:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise OSError(e.errno, e.strerror, path) from None  # the one-line error names the file


def write_stats(shard_stats_files: list[str], dataset: str, out: str) -> None:
    """The shards' stats files summed into one: counts, skips by reason, timings, bytes."""
    shards = []
    for path in shard_stats_files:
        with open(path) as f:
            shards.append(json.load(f))
    totals = {
        key: sum(s[key] for s in shards) for key in ("images", "skipped", "seconds", "source_bytes", "shard_bytes")
    }
    totals["seconds"] = round(totals["seconds"], 3)
    totals["images_per_s"] = round(totals["images"] / totals["seconds"], 2) if totals["seconds"] else 0.0
    totals["dataset_bytes"] = os.path.getsize(dataset)
    reasons: dict[str, int] = {}
    for s in shards:
        for reason, count in s["skipped_by_reason"].items():
            reasons[reason] = reasons.get(reason, 0) + count
    totals["skipped_by_reason"] = reasons
    write_json(out, {"dataset": dataset, "totals": totals, "shards": shards})
    print(f"stats: {totals['images']} images in {len(shards)} shards, {totals['images_per_s']} images/s", file=sys.stderr)


def gather_job(job) -> None:
    from .publish import gather_and_publish

    pixels = job.params.pixels
    done, snapshot, collected = gather_and_publish(
        job.params.shards,
        job.out,
        tuple(pixels["shape"]),
        keep_snapshots=job.params.config.get("keep_snapshots", 0),
        mode=job.params.mode,
        compression=pixels["compression"],
        attrs={
            "config": job.params.config,
            "resize": pixels["resize"] or "none",
            "image_shape": pixels["shape"],
            # Where the sources were, so `imgshard verify` finds them from any directory.
            "images_dir": os.path.abspath(job.params.config["images_dir"]),
            "image_list": os.path.abspath(job.params.config["image_list"]) if job.params.config["image_list"] else "",
        },
        left_out=[tuple(p) for p in job.params.left_out],
    )
    summary = (
        f"imgshard: {job.out}: {done.images} images from {len(job.params.shards)} shards"
        f" ({job.params.mode}), {len(done.skipped)} skipped"
    )
    for path, reason in done.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    print(
        f"published {snapshot}; removed {len(collected.snapshots)} old snapshots and {len(collected.parts)} part files;"
        f" {len(collected.held)} old snapshots held by readers kept",
        file=sys.stderr,
    )
    write_stats(job.params.shard_stats, job.out, job.stats)
    # The run's summary: in the log, and on the terminal where snakemake shows job output.
    print(summary, file=sys.stderr)
    print(summary + (f" (listed in {job.log} and the dataset's 'skipped' attribute)" if done.skipped else ""))


def verify_job(job) -> None:
    from .verify import verify

    from .manifest import read as read_manifest

    failed = []
    for dataset, images_dir, manifests in job.params.datasets:
        if not os.path.isfile(dataset):
            raise ImgshardError(f"verify: {dataset} does not exist; build it first (snakemake --cores N)")
        # The scan of this very run wrote the manifests: they list the images there now.
        images = [e.path for m in manifests for e in read_manifest(m)]
        report = verify(dataset, images_dir, images, job.threads)
        if report.problems:
            failed.append(report.failure(dataset, images_dir))
            continue
        summary = f"imgshard: verify: {dataset}: all {report.checked} images match their sources"
        print(summary, file=sys.stderr)
        print(summary)
    if failed:
        raise ImgshardError("\n".join(failed))


def figures_job(job) -> None:
    from .figures import contact_sheet, stats_table, throughput_chart

    shown = contact_sheet(job.dataset, job.contact_sheet)
    throughput_chart(job.stats, job.throughput)
    stats_table(job.stats, job.table)
    print(f"figures: contact sheet of {len(shown)} images: {', '.join(shown)}", file=sys.stderr)
