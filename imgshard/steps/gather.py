"""Rule gather: the shards' indexes into a new snapshot of the dataset, published, and the stats summed."""

from __future__ import annotations

import os
import sys

from ..format import CONFIG_ATTR, IMAGE_LIST_ATTR, IMAGES_DIR_ATTR
from ..publish.snapshots import gather_and_publish
from .stats import write_stats


def gather_job(job) -> None:
    pixels = job.params.pixels
    done, snapshot, collected = gather_and_publish(
        job.params.shards,
        job.out,
        tuple(pixels["shape"]),
        keep_snapshots=job.params.config.get("keep_snapshots", 0),
        mode=job.params.mode,
        compression=pixels["compression"],
        attrs={
            CONFIG_ATTR: job.params.config,
            "resize": pixels["resize"] or "none",
            "image_shape": pixels["shape"],
            # Where the sources were, so `imgshard verify` finds them from any directory.
            IMAGES_DIR_ATTR: os.path.abspath(job.params.config["images_dir"]),
            IMAGE_LIST_ATTR: os.path.abspath(job.params.config["image_list"]) if job.params.config["image_list"] else "",
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
