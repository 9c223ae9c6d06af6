"""Rule decode_shard: the job's command line to a ``ShardJob``, its log lines and its stats file.

The shard job's own work is build/shard.py's ``build_shard``; this adds what
only a job run by Snakemake has: its manifest, its labels file, its progress
file for the live line, and its stats file.
"""

from __future__ import annotations

import json
import os
import sys

from tqdm import tqdm

from ..build.shard import ShardJob, build_shard
from ..pixels.geometry import Geometry
from ..plan.labels import FOLDERS, folder_labels, read_labels
from ..plan.manifest import read as read_manifest
from .progress import Reporter
from .run import seconds_since_process_start
from .stats import shard_stats, write_json


def decode_shard_job(job) -> None:
    startup = seconds_since_process_start()
    images_dir = job.params.images_dir
    entries = read_manifest(job.manifest)
    relpaths = [e.path for e in entries]
    shard = job.params.shard
    progress = Progress(getattr(job, "progress", None), shard, len(entries))
    try:
        result = build_shard(
            ShardJob(
                sources=[os.path.join(images_dir, rel) for rel in relpaths],
                relpaths=relpaths,
                index_path=job.out,
                geometry=geometry_from_params(job.params.pixels),
                shard=shard,
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
                progress=progress,
            )
        )
    finally:
        progress.close()
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
    write_json(job.stats, shard_stats(shard, sum(e.size for e in entries), result, timings))
    for path, reason in result.skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if result.alpha_dropped:
        names = ", ".join(result.alpha_dropped[:5]) + (", ..." if len(result.alpha_dropped) > 5 else "")
        n = len(result.alpha_dropped)
        print(f"alpha: {n} image{'s' if n != 1 else ''} had an alpha channel, left out (rows are RGB): {names}", file=sys.stderr)


class Progress:
    """How far the job is: a bar in its log, and a file the Snakemake process shows (progress.py).

    ``start`` once the job knows how many of its images it decodes (the others are done already).
    """

    def __init__(self, path: str | None, shard: int, images: int):
        self.path, self.shard, self.images = path, shard, images
        self.bar = self.reporter = None

    def start(self, to_decode: int) -> None:
        self.reporter = Reporter(self.path, self.images, self.images - to_decode)
        self.bar = tqdm(total=to_decode, desc=f"shard {self.shard}", unit="img", file=sys.stderr, mininterval=2, ascii=True)

    def update(self, count: int) -> None:
        self.bar.update(count)
        self.reporter.update(count)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.reporter.close()


def geometry_from_params(pixels: dict) -> Geometry:
    return Geometry(*pixels["shape"], resize=pixels["resize"], pad_value=pixels["pad_value"], reducing_gap=pixels["reducing_gap"])


def start_method(configured: str) -> str:
    """``auto`` is fork here: this process runs no OpenCV before its workers
    exist (the hazard fork has, see build/workers.py's mp_context), and fork saves
    starting a fork server in every shard job."""
    return "fork" if configured == "auto" else configured
