"""Rule gather: the shards' indexes into a new snapshot of the dataset, published, and the stats summed."""

from __future__ import annotations

import os
import sys

import h5py

from ..format import CONFIG_ATTR, IMAGE_LIST_ATTR, IMAGES_DIR_ATTR, PATHS, SHA256
from ..publish.snapshots import gather_and_publish
from .stats import write_stats


def gather_job(job) -> None:
    pixels = job.params.pixels
    before = published_listing(job.out)
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
    write_stats(job.params.shard_stats, job.out, job.stats, changes(before, done))
    # The run's summary: in the log, and on the terminal where snakemake shows job output.
    print(summary, file=sys.stderr)
    print(summary + (f" (listed in {job.log} and the dataset's 'skipped' attribute)" if done.skipped else ""))


def published_listing(dataset: str) -> dict[str, str] | None:
    """The dataset published now (before this gather): each image's path and sha256; None when there is none."""
    try:
        with h5py.File(dataset, "r") as f:
            return dict(zip(f[PATHS].asstr()[()], f[SHA256].asstr()[()]))
    except (FileNotFoundError, OSError, KeyError):
        return None


def changes(before: dict[str, str] | None, done) -> dict:
    """What the new dataset changes against the one published before it (the run's summary says it)."""
    old = before or {}
    now = done.listing
    return {
        "published_before": before is not None,
        "added": sum(1 for p in now if p not in old),
        "changed": sum(1 for p, sha in now.items() if p in old and old[p] != sha),
        "removed": sum(1 for p in old if p not in now),
        "skipped": [p for p, _ in done.skipped],
    }
