"""What a hard-killed run leaves: every writer of a ``*.tmp-<pid>`` file removes those of dead writers
on its next write, and never one of a live process (another run, still writing)."""

from __future__ import annotations

import os
import subprocess

from tests.conftest import make_images, snakemake, write_image


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_the_next_run_removes_every_dead_writers_temporary_file_and_keeps_live_ones(tmp_path, workdir):
    images = tmp_path / "images"
    rels = make_images(images, 6)
    config = dict(images_dir=images, shards=1, gather="copy")
    snakemake(workdir, **config)
    results = workdir / "results"
    shards = results / "dataset.shards"
    spill = workdir / ".snakemake/imgshard-jobs"
    spill.mkdir(parents=True, exist_ok=True)
    # One of each: the dataset (a copy gather's is the size of the whole dataset), a snapshot, a part,
    # a shard index, its previous link, its stats, the dataset's stats, a manifest, a spilled job file.
    targets = [
        results / "dataset.h5",
        shards / "snapshots/0123456789ab.h5",
        shards / "parts/000-0123456789ab.h5",
        shards / "shard-000.h5",
        shards / "previous/shard-000.h5",
        shards / "shard-000.json",
        results / "dataset.stats.json",
        shards / "manifest-000.tsv",
        spill / ("0" * 64 + ".json"),
    ]
    dead, live = dead_pid(), os.getpid()
    for target in targets:
        for pid in (dead, live):
            target.with_name(f"{target.name}.tmp-{pid}").write_bytes(b"half written")
    write_image(images / rels[0], seed=77)  # a rerun: a shard job, a gather, and a run that ran jobs
    snakemake(workdir, **config)
    left = {str(p.relative_to(workdir)) for p in workdir.rglob("*.tmp-*")}
    assert left == {str(t.with_name(f"{t.name}.tmp-{live}").relative_to(workdir)) for t in targets}
