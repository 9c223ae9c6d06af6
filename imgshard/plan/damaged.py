"""Parse time, before Snakemake decides what to run: outputs that look up to date but stand for files that are gone.

Snakemake judges a job by its outputs' existence and times. A shard's index
and stats can outlive the part files they name (a shard folder deleted, a
copy cut short, a disk that filled), and the gather's stats the dataset it
published: those outputs are removed here, so that Snakemake reruns exactly
the jobs that make them again.
"""

from __future__ import annotations

import contextlib
import json
import os

from ..layout import Layout


def redo_what_is_damaged(layout: Layout, shard_names: list[str]) -> list[str]:
    """Remove the outputs Snakemake would otherwise take as up to date though what they stand for is gone
    or damaged, so that it runs their jobs again; what was wrong, a line each.

    A shard whose index, stats or part files are gone, or whose parts are no
    longer the size they were written with (a copy cut short, a disk that
    filled, the shard folder deleted), loses its index and stats, and the
    gather its output too (Snakemake does not rebuild a missing file that only
    a finished output needs). The gather's declared output is its stats file:
    when the dataset it published is gone (deleted by hand) or no longer its
    size, the stats go too.
    """
    redo = []
    out_path, stats_path = layout.output, layout.stats
    try:
        with open(stats_path) as f:
            # built with these shards: a shard whose files are missing lost them since (not new in a resharding)
            built = len(json.load(f)["shards"]) == len(shard_names)
    except (FileNotFoundError, ValueError, KeyError):
        built = False
    for name in shard_names:
        index, stats = layout.index(name), layout.shard_stats(name)
        try:
            with open(stats) as f:
                parts = json.load(f).get("parts") or {}
            if not os.path.exists(index):
                raise FileNotFoundError(index)
        except (FileNotFoundError, ValueError):
            if built:  # the dataset was built, and this shard's files are gone since
                redo.append(f"{index}: gone; the shard is rebuilt")
                _remove(index, stats, stats_path)
            continue
        for part, size in parts.items():
            path = os.path.abspath(layout.part(part))
            found = os.path.getsize(path) if os.path.exists(path) else None
            if found != size:
                redo.append(f"{path}: {'gone' if found is None else 'damaged (not the size it was written with)'}; its shard is rebuilt")
                _remove(index, stats, stats_path)
                break
    if os.path.exists(stats_path):
        try:
            with open(stats_path) as f:
                size = json.load(f)["totals"]["dataset_bytes"]
        except (ValueError, KeyError):
            size = None
        if not os.path.exists(out_path) or (size is not None and os.path.getsize(out_path) != size):
            redo.append(f"{out_path}: {'gone' if not os.path.exists(out_path) else 'damaged'}; it is published again")
            os.unlink(stats_path)
    return redo


def _remove(*paths: str) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)

