"""The stats files: one per shard job, summed into one per dataset by the gather (as img2dataset keeps them)."""

from __future__ import annotations

import glob
import json
import os
import sys

from ..temp import remove_stale_temps, temp_name


def shard_stats(shard: int, source_bytes: int, result, timings: dict) -> dict:
    """One shard's stats file: counts, every skip with its reason, timings and bytes (as img2dataset keeps them)."""
    reasons: dict[str, int] = {}
    for _, reason in result.skipped:
        key = reason.split(" (")[0]
        reasons[key] = reasons.get(key, 0) + 1
    parts = result.parts
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
        "alpha_dropped": len(result.alpha_dropped),  # images whose alpha channel the RGB rows leave out
        "seconds": round(result.seconds, 3),
        "images_per_s": round(len(result.paths) / result.seconds, 2) if result.seconds else 0.0,
        "timings": timings,
        "source_bytes": source_bytes,
        # what its parts hold on disk, rows no image uses any more included
        "shard_bytes": sum(parts.values()),
        # each part's size: a run finds a part cut short before it trusts the shard (plan/damaged.py)
        "parts": parts,
    }


def write_json(path: str, data) -> None:
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


def write_stats(shard_stats_files: list[str], dataset: str, out: str, changes: dict | None = None) -> None:
    """The shards' stats files summed into one: counts, skips by reason, timings, bytes; and ``changes``,
    what this dataset changed against the one published before it."""
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
    write_json(out, {"dataset": dataset, "totals": totals, "changes": changes or {}, "shards": shards})
    print(f"stats: {totals['images']} images in {len(shards)} shards, {totals['images_per_s']} images/s", file=sys.stderr)
