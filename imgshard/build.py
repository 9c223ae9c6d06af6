"""Step 3, decode: one shard job, from its list of images to its finished shard file.

The job takes the rows of unchanged images from the shard's previous file
(reuse.py), has worker processes decode the others into shared memory
(workers.py, decode.py), and writes the shard file (write.py) one of two ways:
a new file with every row in the order of its list, reused rows copied while
the workers decode; or, when few images are new, changed or gone, the
previous file changed in place, new rows written into free slots. Either
way the dataset the gather makes lists the images as a fresh build does.
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
from .labels import Labels
from .workers import MB, Decoded, Workers, plan_buffers
from .write import ShardWriter, ensure_space, rewrite_index, temp_name, write_rows_in_place


@dataclass
class ShardResult:
    paths: list[str] = field(default_factory=list)
    sha256: list[str] = field(default_factory=list)
    sizes: list[tuple[int, int]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    labels: list[int] = field(default_factory=list)  # class index per kept image, with classification labels
    row_keys: list[bytes] = field(default_factory=list)
    reused: int = 0  # rows copied from the previous file
    seconds: float = 0.0
    # Where the seconds went, as the parent sees them: waiting for workers to
    # decode (with their start-up), and writing (and copying reused rows) while they decode.
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
    workers: int = 1,
    shm_budget_mb: int = 1024,
    compression: str = "none",
    on_error: str = "fail",
    start_method: str = "forkserver",
    labels: Labels | None = None,
    attrs: dict | None = None,
    source_stats: list[tuple[int, int]] | None = None,
) -> ShardResult:
    """Decode ``sources`` into the shard file ``out_path``; ``relpaths`` are what it records.

    ``labels`` (every relpath must have a row) adds ``masks`` or ``labels`` to the shard.
    ``source_stats``, each source's (size, mtime_ns) as the manifest saw it,
    turns reuse on: rows of images unchanged since the previous file are copied
    from it, and this file becomes the next run's previous one.
    """
    started = time.perf_counter()
    shm.remove_stale()
    height, width = geometry.shape
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
    old = [previous.row_of(k) for k in keys] if previous is not None else [None] * n
    todo = [i for i in range(n) if old[i] is None]  # positions to decode
    slots = previous.slots_in_place(old, compression) if previous is not None else None
    if slots is not None:
        done = _update_in_place(
            previous, slots, sources, relpaths, old, out_path, geometry, todo, keys, targets, labels, attrs,
            shard=shard, workers=workers, shm_budget_mb=shm_budget_mb, start_method=start_method, started=started,
        )  # fmt: skip
        if done is not None:
            return done
    rows, nbuf = plan_buffers(len(todo), height * width * (3 + k_masks), shm_budget_mb * MB, shm.free_bytes())
    tag = run_tag(out_path)
    names = [shm.segment_name(tag, shard, k) for k in range(nbuf)]
    mask_names = [shm.segment_name(tag, shard, k, "m") for k in range(nbuf)] if k_masks else []
    result = ShardResult(buffer_rows=rows, buffers=nbuf)
    buffers: list[np.ndarray] = []
    mask_buffers: list[np.ndarray] = []
    pool = writer = None
    finished = False
    try:
        for name in names:
            buffers.append(shm.create(name, (rows, height, width, 3)))
        for name in mask_names:
            mask_buffers.append(shm.create(name, (rows, height, width, k_masks)))
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
        # Open the HDF5 files only now: the workers exist, so none inherits a handle.
        if previous is not None:
            previous.open()
        writer = ShardWriter(out_path, n, geometry.shape, compression, labels)
        placer = _Placer(writer, previous, old, relpaths, keys, targets if not k_masks else None, on_error, result)
        progress = tqdm(total=len(todo), desc=f"shard {shard}", unit="img", file=sys.stderr, mininterval=2, ascii=True)
        with progress:
            for b, (s, e) in enumerate(batches):
                t0 = time.perf_counter()
                placer.place(todo[s])  # reused rows before this batch, copied while the workers decode it
                t1 = time.perf_counter()
                decoded = Workers.collect(pending.pop(b), progress, shard)
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
        result.seconds = time.perf_counter() - started
        writer.finish(
            result.paths,
            result.sha256,
            np.array(result.sizes).reshape(-1, 2),
            result.skipped,
            attrs,
            result.labels,
            result.row_keys if keys is not None else None,
        )
        finished = True
        if keys is not None:
            reuse.keep(out_path)
        return result
    finally:
        try:
            if previous is not None:
                previous.close()
            if pool is not None:
                pool.stop(kill=not finished)
            if writer is not None and not finished:
                writer.abort()  # may raise DiskFull: the segments still go
        finally:
            for name in names + mask_names:
                shm.delete(name)


def _update_in_place(previous, slots, sources, relpaths, old, out_path, geometry, todo, keys, targets, labels, attrs, *, shard, workers, shm_budget_mb, start_method, started) -> ShardResult | None:
    """Decode the ``todo`` images, write them into their ``slots`` of the previous file, and publish it as ``out_path``.

    None when a new image cannot be decoded or they do not fit one buffer:
    the caller builds a fresh file then, with the previous one untouched.
    """
    height, width = geometry.shape
    k_masks = len(labels.classes) if labels is not None and labels.kind == "masks" else 0
    row_bytes = height * width * (3 + k_masks)
    rows = len(todo)  # one buffer, one batch: few images
    if rows * row_bytes > min(shm_budget_mb * MB, shm.free_bytes()):
        return None
    tag = run_tag(out_path)
    name, mask_name = shm.segment_name(tag, shard, 0), shm.segment_name(tag, shard, 0, "m")
    names = ([name] + ([mask_name] if k_masks else [])) if todo else []
    result = ShardResult(buffer_rows=rows, buffers=1 if todo else 0)
    pool = buffer = masks = None
    decoded: list[Decoded] = []
    tmp = temp_name(out_path)
    try:
        if todo:
            buffer = shm.create(name, (rows, height, width, 3))
            masks = shm.create(mask_name, (rows, height, width, k_masks)) if k_masks else None
            pool = Workers(max(1, min(workers, len(todo))), start_method, [name], names[1:], geometry)
            t0 = time.perf_counter()
            with tqdm(total=len(todo), desc=f"shard {shard}", unit="img", file=sys.stderr, mininterval=2, ascii=True) as progress:
                decoded = Workers.collect(
                    pool.submit(0, [sources[i] for i in todo], [targets[i] for i in todo] if k_masks else None), progress, shard
                )
            result.decode_wait = time.perf_counter() - t0
            if any(d.error is not None for d in decoded):
                return None
        t0 = time.perf_counter()
        sha256 = [previous.sha256[j] if j is not None else None for j in old]
        sizes = [tuple(int(v) for v in previous.sizes[j]) if j is not None else None for j in old]
        for d in decoded:
            sha256[todo[d.row]], sizes[todo[d.row]] = d.sha256, d.size
        end = max(previous.rows, int(slots.max()) + 1)
        left = sorted({int(r) for r in previous.slots} - {int(r) for r in slots})  # rows of images gone: zeroed
        ensure_space(out_path, row_bytes * (end - previous.rows))
        os.replace(previous.path, tmp)
        with h5py.File(tmp, "r+") as f:
            write_rows_in_place(f, buffer, masks, [(d.row, int(slots[todo[d.row]])) for d in decoded], end, left)
            classes = [t[0] for t in targets] if labels is not None and not k_masks else None
            rewrite_index(f, relpaths, sha256, np.array(sizes).reshape(-1, 2), keys, slots, attrs, labels, classes)
        os.replace(tmp, out_path)
        reuse.keep(out_path)
        print(
            f"shard {shard}: {len(todo)} new or changed rows written and {len(left)} emptied in the previous file (in place)",
            file=sys.stderr,
        )
        result.write = time.perf_counter() - t0
        result.paths, result.sha256, result.sizes = list(relpaths), sha256, sizes
        result.row_keys, result.reused = keys, len(relpaths) - len(todo)
        result.labels = classes or []
        result.seconds = time.perf_counter() - started
        return result
    finally:
        if pool is not None:
            pool.stop(kill=result.seconds == 0.0)
        if os.path.exists(tmp):
            os.unlink(tmp)
        for segment in names:
            shm.delete(segment)


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
    """Puts the shard's images into the file in list order, skipped ones left out."""

    def __init__(self, writer, previous, old, relpaths, keys, class_targets, on_error, result: ShardResult):
        self.writer, self.previous, self.old = writer, previous, old
        self.relpaths, self.keys, self.class_targets = relpaths, keys, class_targets
        self.on_error, self.result = on_error, result
        self.position = 0  # next image of the list
        self.row = 0  # next row of the file

    def place(self, until: int, decoded: dict[int, Decoded] | None = None, buffer=None, masks=None) -> None:
        """Images ``position`` to ``until`` (exclusive): reused ones, and those of ``decoded`` (in ``buffer``)."""
        r = self.result
        copies, writes = [], []
        for i in range(self.position, until):
            if self.old[i] is not None:
                j = self.old[i]
                copies.append((int(self.previous.slots[j]), self.row))
                sha256, size = self.previous.sha256[j], tuple(int(v) for v in self.previous.sizes[j])
                r.reused += 1
            else:
                d = decoded[i]
                if d.error is not None:
                    r.skipped.append((self.relpaths[i], d.error))
                    continue
                writes.append((d.row, self.row))
                sha256, size = d.sha256, d.size
            r.paths.append(self.relpaths[i])
            r.sha256.append(sha256)
            r.sizes.append(size)
            if self.keys is not None:
                r.row_keys.append(self.keys[i])
            if self.class_targets is not None:
                r.labels.append(self.class_targets[i][0])
            self.row += 1
        self.position = max(self.position, until)
        if r.skipped and self.on_error == "fail":
            return  # the job fails: decode on to name every bad image, but write nothing more
        if copies:
            self.writer.copy(self.previous.images, self.previous.masks, copies)
        self.writer.write(buffer, writes, masks)
