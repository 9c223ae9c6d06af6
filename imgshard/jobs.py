"""What the Snakemake scripts call: the snakemake object turned into plain arguments, plus logging.

Kept apart from the steps themselves so that tests call the steps with plain
arguments and no Snakemake at all.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sys
import traceback

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


def decode_shard_job(smk) -> None:
    from .build import decode_shard
    from .labels import read_labels
    from .manifest import read as read_manifest

    startup = seconds_since_process_start()

    images_dir = smk.params.images_dir
    entries = read_manifest(smk.input.manifest)
    relpaths = [e.path for e in entries]
    sources = [os.path.join(images_dir, rel) for rel in relpaths]
    shard = int(smk.wildcards.shard)
    result = decode_shard(
        sources,
        relpaths,
        smk.output.shard,
        geometry_from_params(smk.params.pixels),
        shard=shard,
        workers=smk.threads,
        shm_budget_mb=smk.resources.shm_mb,
        compression=smk.params.pixels["compression"],
        on_error=smk.params.on_error,
        start_method=start_method(smk.params.start_method),
        labels=read_labels(smk.params.labels) if smk.params.labels else None,
        attrs={"shard": shard, "pixels": smk.params.pixels},
        source_stats=[(e.size, e.mtime_ns) for e in entries] if smk.config.get("reuse", True) else None,
    )
    rate = len(result.paths) / result.seconds if result.seconds else 0.0
    print(
        f"shard {shard}: {len(result.paths)} images ({result.reused} reused), {len(result.skipped)} skipped,"
        f" {result.seconds:.2f} s, {rate:.1f} images/s"
        f" ({smk.threads} workers, {result.buffers} x {result.buffer_rows}-image buffers)",
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
    write_json(smk.output.stats, shard_stats(shard, sum(e.size for e in entries), smk.output.shard, result, timings))
    for path, reason in result.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)


def shard_stats(shard: int, source_bytes: int, shard_file: str, result, timings: dict) -> dict:
    """One shard's stats file: counts, every skip with its reason, timings and bytes (as img2dataset keeps them)."""
    reasons: dict[str, int] = {}
    for _, reason in result.skipped:
        key = reason.split(" (")[0]
        reasons[key] = reasons.get(key, 0) + 1
    return {
        "shard": shard,
        "images": len(result.paths),
        "skipped": len(result.skipped),
        "skipped_by_reason": reasons,
        "seconds": round(result.seconds, 3),
        "images_per_s": round(len(result.paths) / result.seconds, 2) if result.seconds else 0.0,
        "timings": timings,
        "source_bytes": source_bytes,
        "shard_bytes": os.path.getsize(shard_file),
    }


def write_json(path: str, data) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
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


def gather_job(smk) -> None:
    from .gather import gather

    pixels = smk.params.pixels
    done = gather(
        list(smk.input.shards),
        smk.output.dataset,
        tuple(pixels["shape"]),
        mode=smk.params.mode,
        compression=pixels["compression"],
        attrs={
            "config": smk.params.config,
            "resize": pixels["resize"] or "none",
            "image_shape": pixels["shape"],
            # Where the sources were, so `imgshard verify` finds them from any directory.
            "images_dir": os.path.abspath(smk.params.config["images_dir"]),
            "image_list": os.path.abspath(smk.params.config["image_list"]) if smk.params.config["image_list"] else "",
        },
        left_out=[tuple(p) for p in smk.params.left_out],
    )
    summary = (
        f"imgshard: {smk.output.dataset}: {done.images} images from {len(smk.input.shards)} shards"
        f" ({smk.params.mode}), {len(done.skipped)} skipped"
    )
    for path, reason in done.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    write_stats(list(smk.input.stats), smk.output.dataset, smk.output.stats)
    # The run's summary: in the log, and on the terminal where snakemake shows job output.
    print(summary, file=sys.stderr)
    print(summary + (f" (listed in {smk.log[0]} and the dataset's 'skipped' group)" if done.skipped else ""))


def verify_job(smk) -> None:
    from .verify import verify

    from .manifest import read as read_manifest

    failed = []
    for dataset, images_dir, manifests in smk.params.datasets:
        if not os.path.isfile(dataset):
            raise ImgshardError(f"verify: {dataset} does not exist; build it first (snakemake --cores N)")
        # The scan of this very run wrote the manifests: they list the images there now.
        images = [e.path for m in manifests for e in read_manifest(m)]
        report = verify(dataset, images_dir, images, smk.threads)
        if report.problems:
            failed.append(report.failure(dataset, images_dir))
            continue
        summary = f"imgshard: verify: {dataset}: all {report.checked} images match their sources"
        print(summary, file=sys.stderr)
        print(summary)
    if failed:
        raise ImgshardError("\n".join(failed))


def figures_job(smk) -> None:
    from .figures import contact_sheet, stats_table, throughput_chart

    shown = contact_sheet(smk.input.dataset, smk.output.contact_sheet)
    throughput_chart(smk.input.stats, smk.output.throughput)
    stats_table(smk.input.stats, smk.output.table)
    print(f"figures: contact sheet of {len(shown)} images: {', '.join(shown)}", file=sys.stderr)
