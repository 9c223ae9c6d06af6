"""One shard job, from its list of images to its committed index: the build stage's one entry point.

The data flows one way, each step taking the value the one before returned:

1. plan (reuse.py): read the shard's previous index once; decide which images
   keep the part and row they have, which are copied into the new part as
   stored, which are decoded; count what was added, changed and removed;
2. decode (workers.py): worker processes decode the images to decode into
   buffers in /dev/shm, a batch at a time;
3. assemble (assemble.py): the new part (part.py) is filled in list order
   from the buffers and from older parts, while the workers decode the next
   batch; nothing already on disk is changed;
4. index (index.py): where every listed image now is, built from the plan and
   what was assembled;
5. commit (index.py): the index replaces the old one and becomes the next
   run's previous index.

``build_shard`` calls them in turn and returns the job's account: its stats
come from these values, never from reading back what it wrote.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field

from .. import shm
from ..errors import ImgshardError
from ..layout import Layout
from ..pixels.geometry import Geometry
from ..plan.labels import Labels
from . import reuse
from .assemble import assemble
from .index import commit, make_index
from .part import PartWriter
from .workers import Decoder


@dataclass(frozen=True)
class ShardJob:
    """What one shard job is given: its images and where its index goes, how to make rows, what it may use."""

    sources: list[str]  # the files, as opened
    relpaths: list[str]  # as the dataset records them
    index_path: str  # <stem>.shards/shard-NNN.h5 (the part goes beside it)
    geometry: Geometry
    shard: int = 0
    workers: int = 1
    shm_budget_mb: int = 1024
    jobs_at_once: int = 1  # shard jobs that may run side by side here, sharing /dev/shm
    compression: str = "none"
    on_error: str = "fail"
    start_method: str = "forkserver"
    labels: Labels | None = None  # every relpath must have a row; adds masks or labels
    attrs: dict = field(default_factory=dict)
    # Each source's (size, mtime_ns) as the manifest saw it: turns reuse on (images unchanged since
    # the previous index keep their rows, and this index becomes the next run's previous one).
    source_stats: list[tuple[int, int]] | None = None
    progress: object = None  # start(images to decode), then update(count) as they are decoded

    @property
    def shard_name(self) -> str:
        try:
            return Layout.of_index(self.index_path)[1]
        except ValueError:  # an index outside a shard folder (tests, tools)
            return f"{self.shard:03d}"


@dataclass(frozen=True)
class ShardResult:
    paths: list[str]  # the images the index lists, in order
    skipped: list[tuple[str, str]]  # (path, reason)
    decoded: int
    reused: int  # rows kept where they are, or copied as stored
    copied: int  # of those, rows copied into the new part
    added: int  # images new to the shard, changed since its previous index, gone from it
    changed: int
    removed: int
    fresh: bool  # the new part holds every row
    seconds: float
    # Where the seconds went, as the parent sees them: waiting for workers to decode
    # (with their start-up), and writing (and copying rows) while they decode.
    decode_wait: float
    write: float
    buffer_rows: int
    buffers: int
    parts: dict[str, int]  # every part the index names: its size in bytes
    alpha_dropped: list[str]  # images stored without the alpha channel they had


def run_tag(index_path: str) -> str:
    """Short tag that tells apart runs writing to different places (it names their segments)."""
    return hashlib.blake2b(os.path.abspath(index_path).encode(), digest_size=4).hexdigest()


def build_shard(job: ShardJob) -> ShardResult:
    """Decode, assemble, index and commit one shard; ImgshardError naming every image that failed (on_error: fail)."""
    started = time.perf_counter()
    shm.remove_stale()
    shards_dir = os.path.dirname(os.path.abspath(job.index_path))

    plan = reuse.plan(job)
    if job.progress is not None:
        job.progress.start(len(plan.todo))
    targets = plan.targets
    todo_sources = [job.sources[i] for i in plan.todo]
    todo_rles = [targets[i] for i in plan.todo] if plan.masks else None
    classes = job.labels.classes if plan.masks else None
    with Decoder(job, run_tag(job.index_path), todo_sources, todo_rles, len(classes or ())) as decoder:
        # Opened only now that the workers exist, so that none inherits an HDF5 handle.
        writer = PartWriter(shards_dir, job.shard_name, len(plan.new_part), job.geometry.shape, job.compression, classes) if plan.new_part else None
        try:
            assembled = assemble(plan, decoder, writer, job.relpaths, shards_dir, stop_writing=job.on_error == "fail")
            if assembled.skipped and job.on_error == "fail":
                lines = "\n".join(f"{path}: {reason}" for path, reason in assembled.skipped)
                raise ImgshardError(
                    f"shard {job.shard}: {len(assembled.skipped)} of {len(job.sources)} images could not be stored (on_error: fail)\n{lines}"
                )
            t0 = time.perf_counter()
            part = writer.finish() if writer is not None else None
            finishing = time.perf_counter() - t0
        except BaseException:  # leaving the with block kills the workers and removes the segments
            if writer is not None:
                writer.abort()  # may raise DiskFull: the segments still go (Decoder's exit)
            raise
    t0 = time.perf_counter()  # the workers have exited: not counted as writing
    index = make_index(plan, assembled, part, job.labels, plan.attrs)
    commit(job.index_path, index, keep=plan.reusing)
    finishing += time.perf_counter() - t0
    decoded = len(plan.todo) - len(assembled.skipped)
    return ShardResult(
        paths=index.paths,
        skipped=assembled.skipped,
        decoded=decoded,
        reused=len(index.paths) - decoded,
        copied=plan.copied,
        added=plan.added,
        changed=plan.changed,
        removed=plan.removed,
        fresh=plan.fresh,
        seconds=time.perf_counter() - started,
        decode_wait=assembled.decode_wait,
        write=assembled.write + finishing,
        buffer_rows=decoder.rows,
        buffers=decoder.count,
        parts=dict(zip(index.parts, index.part_bytes)),
        alpha_dropped=[job.relpaths[i] for i, d in sorted(assembled.decoded.items()) if d.alpha and i in assembled.row_of],
    )
