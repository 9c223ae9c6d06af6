"""Step 3, decode: one shard job, from its list of images to its published index.

The data flows one way:
1. plan (reuse.py): which images keep the part and row they have, which are
   copied into the new part, which are decoded;
2. decode (workers.py, decode.py): worker processes decode the new and changed
   images into shared memory;
3. write (write.py): one new part file holds the decoded rows and the copied
   ones, in list order; nothing already on disk is changed;
4. publish (index.py): the shard's index, naming the part and row of every
   image, replaces the old one, and becomes the next run's previous index.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from dataclasses import dataclass, field

import h5py
import numpy as np
from tqdm import tqdm

from . import reuse, shm
from .errors import ImgshardError
from .geometry import Geometry
from .index import ShardIndex, write_index
from .labels import Labels
from .progress import Reporter
from .workers import MB, Decoded, Workers, plan_buffers
from .write import PartWriter


@dataclass
class ShardResult:
    paths: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    decoded: int = 0
    reused: int = 0  # rows kept where they are, or copied as stored
    copied: int = 0  # of those, rows copied into the new part
    added: int = 0  # images new to the shard, changed since its previous index, gone from it
    changed: int = 0
    removed: int = 0
    fresh: bool = True  # the new part holds every row
    seconds: float = 0.0
    # Where the seconds went, as the parent sees them: waiting for workers to
    # decode (with their start-up), and writing (and copying rows) while they decode.
    decode_wait: float = 0.0
    write: float = 0.0
    buffer_rows: int = 0
    buffers: int = 0


def run_tag(out_path: str) -> str:
    """Short tag that tells apart runs writing to different places."""
    return hashlib.blake2b(os.path.abspath(out_path).encode(), digest_size=4).hexdigest()


def decode_shard(
    sources: list[str],
    relpaths: list[str],
    out_path: str,
    geometry: Geometry,
    *,
    shard: int = 0,
    shard_name: str | None = None,
    workers: int = 1,
    shm_budget_mb: int = 1024,
    jobs_at_once: int = 1,
    compression: str = "none",
    on_error: str = "fail",
    start_method: str = "forkserver",
    labels: Labels | None = None,
    attrs: dict | None = None,
    source_stats: list[tuple[int, int]] | None = None,
    progress: str | None = None,
) -> ShardResult:
    """Decode ``sources`` into a part file beside ``out_path`` and write the shard's index to ``out_path``.

    ``relpaths`` are what it records. ``jobs_at_once``: the shard jobs that may
    run side by side on this machine, sharing its /dev/shm. ``labels`` (every relpath must have a row)
    adds ``masks`` or ``labels``. ``source_stats``, each source's (size, mtime_ns)
    as the manifest saw it, turns reuse on: images unchanged since the previous
    index keep their rows, and this index becomes the next run's previous one.
    ``progress``: a file the Snakemake process reads to show how far the job is (progress.py).
    """
    started = time.perf_counter()
    shm.remove_stale()
    shard_name = shard_name or f"{shard:03d}"
    n = len(sources)
    k_masks = len(labels.classes) if labels is not None and labels.kind == "masks" else 0
    targets = [labels.rows[r] for r in relpaths] if labels is not None else None
    attrs = dict(attrs or {})
    keys = previous = None
    if source_stats is not None:
        keys = [
            reuse.row_key(rel, size, mtime, targets[i] if k_masks else None)
            for i, (rel, (size, mtime)) in enumerate(zip(relpaths, source_stats))
        ]
        attrs[reuse.FINGERPRINT] = reuse.fingerprint(_pixel_settings(geometry, compression), labels)
        previous = reuse.open_previous(out_path, attrs[reuse.FINGERPRINT])
    plan = reuse.plan(previous, keys, n)
    todo = plan.todo
    added, changed, removed = reuse.changes(out_path, relpaths, keys) if keys is not None else (n, 0, 0)

    # 2. decode: buffers in /dev/shm, and the workers that decode into them
    height, width = geometry.shape
    tag = run_tag(out_path)
    names = [shm.segment_name(tag, shard, k) for k in range(2)]
    mask_names = [shm.segment_name(tag, shard, k, "m") for k in range(2)] if k_masks else []
    result = ShardResult(fresh=plan.fresh, added=added, changed=changed, removed=removed)
    reporter = Reporter(progress, n, n - len(todo))
    buffers: list[np.ndarray] = []
    mask_buffers: list[np.ndarray] = []
    pool = writer = None
    sources_open: dict[int, h5py.File] = {}
    shards_dir = os.path.dirname(os.path.abspath(out_path))
    finished = False
    try:
        # Sized and allocated under one lock with the jobs that run beside this one: each takes its
        # share of what /dev/shm really has free, and the next sees what is left.
        with shm.reservation():
            rows, nbuf = plan_buffers(
                len(todo), height * width * (3 + k_masks), shm_budget_mb * MB, shm.free_bytes(), max(1, jobs_at_once - shm.holders())
            )
            names, mask_names = names[:nbuf], mask_names[:nbuf]
            result.buffer_rows, result.buffers = rows, nbuf
            for name in names:
                buffers.append(shm.create(name, (rows, height, width, 3), reserve=True))
            for name in mask_names:
                mask_buffers.append(shm.create(name, (rows, height, width, k_masks), reserve=True))
        if todo:
            pool = Workers(max(1, min(workers, len(todo))), start_method, names, mask_names, geometry)
        rles = [targets[i] for i in todo] if k_masks else None
        todo_sources = [sources[i] for i in todo]
        batches = [(s, min(s + rows, len(todo))) for s in range(0, len(todo), rows)] if todo else []

        def submit(b: int):
            s, e = batches[b]
            return pool.submit(b % nbuf, todo_sources[s:e], rles[s:e] if rles is not None else None)

        # Every batch whose buffer is free is queued: with two buffers the
        # workers go on to the next batch while the parent writes this one,
        # instead of waiting for its last image.
        pending = {b: submit(b) for b in range(min(nbuf, len(batches)))}

        # 3. write: opened only now that the workers exist, so none inherits an HDF5 handle.
        if plan.new_part:
            classes = labels.classes if k_masks else None
            writer = PartWriter(shards_dir, shard_name, len(plan.new_part), geometry.shape, compression, classes)
        placer = _Placer(writer, previous, plan, relpaths, keys, shards_dir, sources_open, on_error, result)
        bar = tqdm(total=len(todo), desc=f"shard {shard}", unit="img", file=sys.stderr, mininterval=2, ascii=True)
        tracker = _Progress(bar, reporter)
        with bar:
            for b, (s, e) in enumerate(batches):
                t0 = time.perf_counter()
                placer.place(todo[s])  # copied rows before this batch, while the workers decode it
                t1 = time.perf_counter()
                decoded = Workers.collect(pending.pop(b), tracker, shard)
                t2 = time.perf_counter()
                k = b % nbuf
                by_position = {todo[s + d.row]: d for d in decoded}
                placer.place(todo[e - 1] + 1, by_position, buffers[k], mask_buffers[k] if k_masks else None)
                if b + nbuf < len(batches):  # its buffer is written: refill it
                    pending[b + nbuf] = submit(b + nbuf)
                result.decode_wait += t2 - t1
                result.write += (t1 - t0) + (time.perf_counter() - t2)
            t0 = time.perf_counter()
            placer.place(n)
            result.write += time.perf_counter() - t0
        if result.skipped and on_error == "fail":
            lines = "\n".join(f"{path}: {reason}" for path, reason in result.skipped)
            raise ImgshardError(
                f"shard {shard}: {len(result.skipped)} of {n} images could not be stored (on_error: fail)\n{lines}"
            )

        # 4. publish: the part, then the index that names it.
        t0 = time.perf_counter()
        if writer is not None:
            writer.finish()
        index = placer.index(labels, attrs)
        write_index(out_path, index)
        finished = True
        if keys is not None:
            reuse.keep(out_path)
        result.write += time.perf_counter() - t0
        result.paths = index.paths
        result.decoded = len(todo) - len(result.skipped)
        result.reused = len(index.paths) - result.decoded
        result.copied = plan.copied
        result.seconds = time.perf_counter() - started
        return result
    finally:
        reporter.close()
        try:
            for f in sources_open.values():
                f.close()
            if pool is not None:
                pool.stop(kill=not finished)
            if writer is not None and not finished:
                writer.abort()  # may raise DiskFull: the segments still go
        finally:
            for name in names + mask_names:
                shm.delete(name)


class _Progress:
    """The job's progress bar (in its log) and its progress file (for the terminal) at once."""

    def __init__(self, bar, reporter: Reporter):
        self.bar, self.reporter = bar, reporter

    def update(self, count: int) -> None:
        self.bar.update(count)
        self.reporter.update(count)


def _pixel_settings(geometry: Geometry, compression: str) -> dict:
    # Not geometry.reference: which image set the size says nothing about any row.
    return {
        "shape": list(geometry.shape),
        "resize": geometry.resize,
        "pad_value": geometry.pad_value,
        "reducing_gap": geometry.reducing_gap,
        "compression": compression,
    }


class _Placer:
    """Fills the new part in its row order (decoded rows from the buffers, copied rows from older
    parts), and records where every listed image ends up."""

    def __init__(self, writer, previous, plan, relpaths, keys, shards_dir, sources_open, on_error, result: ShardResult):
        self.writer, self.previous, self.plan = writer, previous, plan
        self.relpaths, self.keys = relpaths, keys
        # where each image of the previous index is listed, by row key
        self.previous_position = {key: j for j, key in enumerate(previous.row_keys)} if previous is not None else {}
        self.shards_dir, self.sources_open = shards_dir, sources_open
        self.on_error, self.result = on_error, result
        self.cursor = 0  # next entry of plan.new_part
        self.decoded: dict[int, Decoded] = {}  # position -> what the workers said
        self.row_of: dict[int, int] = {}  # position -> its row in the new part

    def place(self, until: int, decoded: dict[int, Decoded] | None = None, buffer=None, masks=None) -> None:
        """New-part images at positions below ``until``: copied ones, and those of ``decoded`` (in ``buffer``)."""
        copies: dict[int, list[tuple[int, int]]] = {}
        writes = []
        new_part = self.plan.new_part
        while self.cursor < len(new_part) and new_part[self.cursor] < until:
            i = new_part[self.cursor]
            self.cursor += 1
            row = len(self.row_of)
            if decoded is not None and i in decoded:
                d = decoded[i]
                self.decoded[i] = d
                if d.error is not None:
                    self.result.skipped.append((self.relpaths[i], d.error))
                    continue
                writes.append((d.row, row))
            else:  # copied from an older part: its key is unchanged
                part, old_row = self._previous_ref(i)
                copies.setdefault(part, []).append((old_row, row))
            self.row_of[i] = row
        if self.result.skipped and self.on_error == "fail":
            return  # the job fails: decode on to name every bad image, but write nothing more
        for part, pairs in copies.items():
            self.writer.copy(self._open(part), pairs)
        if writes:
            self.writer.write(buffer, writes, masks)

    def _previous_ref(self, i: int) -> tuple[int, int]:
        j = self.previous_position[self.keys[i]]
        return int(self.previous.part[j]), int(self.previous.row[j])

    def _open(self, part: int) -> h5py.File:
        if part not in self.sources_open:
            self.sources_open[part] = h5py.File(os.path.join(self.shards_dir, self.previous.parts[part]), "r")
        return self.sources_open[part]

    def index(self, labels: Labels | None, attrs: dict) -> ShardIndex:
        """The shard's new index: every listed image that was not skipped, with its part and row."""
        plan, previous, keys = self.plan, self.previous, self.keys
        parts = [previous.parts[p] for p in plan.kept_parts]
        part_rows = [previous.part_rows[p] for p in plan.kept_parts]
        part_bytes = [previous.part_bytes[p] for p in plan.kept_parts]
        renumber = {p: k for k, p in enumerate(plan.kept_parts)}
        if self.writer is not None:
            parts.append(self.writer.name)
            part_rows.append(self.writer.capacity)
            part_bytes.append(os.path.getsize(self.writer.path))
        new = len(parts) - 1
        previous_position = self.previous_position
        index = ShardIndex(parts=parts, part_rows=part_rows, part_bytes=part_bytes, attrs=attrs, skipped=list(self.result.skipped))
        part, row, sizes, keep_keys = [], [], [], []
        for i, rel in enumerate(self.relpaths):
            if plan.old[i] is not None:
                p, r = plan.old[i]
                j = previous_position[keys[i]]
                part.append(renumber[p])
                row.append(r)
                sha256, size = previous.sha256[j], previous.sizes[j]
            elif i in self.row_of:
                part.append(new)
                row.append(self.row_of[i])
                if i in self.decoded:
                    sha256, size = self.decoded[i].sha256, self.decoded[i].size
                else:
                    j = previous_position[keys[i]]
                    sha256, size = previous.sha256[j], previous.sizes[j]
            else:
                continue  # skipped
            index.paths.append(rel)
            index.sha256.append(sha256)
            sizes.append(tuple(int(v) for v in size))
            if keys is not None:
                keep_keys.append(keys[i])
        index.part = np.asarray(part, np.int32)
        index.row = np.asarray(row, np.int64)
        index.sizes = np.asarray(sizes, np.int32).reshape(-1, 2)
        index.row_keys = keep_keys if keys is not None else None
        if labels is not None:
            index.kind, index.classes = labels.kind, list(labels.classes)
            index.class_counts = labels.counts(index.paths)
            if labels.kind == "labels":
                index.labels = np.array([labels.rows[p][0] for p in index.paths], np.int64)
        return index
