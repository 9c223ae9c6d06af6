"""Build, step 2 of a shard job, decode: the worker processes, and the shared memory they decode into.

``Decoder`` creates one or two SharedArray buffers in /dev/shm, sized under
one lock with the shard jobs beside it, starts the workers and queues every
batch whose buffer is free; each worker attaches once and decodes every image
it is given into its row of a buffer (pixels/decode.py). Only row numbers,
digests and error strings travel between processes, never pixels. With two
buffers the parent writes batch k to the part file while the workers decode
batch k+1. Leaving the ``with`` block removes the segments, whatever happened.
"""

from __future__ import annotations

import math
import os
import signal
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context

import cv2
import numpy as np

from .. import shm
from ..errors import ImgshardError
from ..codecs import mask_bytes, pack_masks
from ..pixels.decode import decode_into, place_masks
from ..pixels.geometry import Geometry

MB = 1024 * 1024
# A shard that fits the budget still goes in this many batches, so that
# writing all but the last overlaps decoding.
MIN_BATCHES = 4


@dataclass
class Decoded:
    row: int  # in the buffer
    sha256: str | None
    size: tuple[int, int] | None  # (height, width) of the decoded source
    error: str | None
    alpha: bool = False  # its alpha channel was left out


# --- worker side -------------------------------------------------------------

_buffers: list[np.ndarray] = []
_masks: list[np.ndarray] = []
_geometry: list[Geometry] = []


def _init_worker(names: list[str], mask_names: list[str], geometry: Geometry) -> None:
    # fork copies the parent's SIGTERM handler; a worker should simply die, the
    # parent cleans up. Ctrl-C reaches the whole process group: the parent decides.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cv2.setNumThreads(1)
    _buffers[:] = [shm.attach(name) for name in names]
    _masks[:] = [shm.attach(name) for name in mask_names]
    _geometry[:] = [geometry]


def _decode_chunk(k: int, rows: list[int], paths: list[str], rles: list[tuple[str, ...]] | None) -> list[Decoded]:
    buf, geometry = _buffers[k], _geometry[0]
    out = []
    for j, (row, path) in enumerate(zip(rows, paths)):
        digest, size, error, alpha = decode_into(path, buf[row], geometry)
        if error is None and rles is not None:
            masks = np.empty((*geometry.shape, len(rles[j])), np.uint8)
            error = place_masks(rles[j], size, masks, geometry)
            if error is None:
                pack_masks(masks, _masks[k][row])  # packed here, by the many, not by the one writer
        out.append(Decoded(row, digest, size, error, alpha))
    return out


# --- parent side -------------------------------------------------------------


def guided_tasks(items: list[int], workers: int) -> list[list[int]]:
    """``items`` cut into tasks, each half of an even share of what is left (guided scheduling).

    The first tasks are large, so messages stay few; the last hold one image
    each, so the workers finish a batch together.
    """
    tasks, start = [], 0
    while start < len(items):
        size = math.ceil((len(items) - start) / (2 * workers))
        tasks.append(items[start : start + size])
        start += size
    return tasks


def _file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0  # decode_into names what is wrong with it


def plan_buffers(n: int, image_bytes: int, budget_bytes: int, free_bytes: int, jobs: int = 1) -> tuple[int, int]:
    """(rows per buffer, number of buffers) for ``n`` images to decode.

    Two buffers let writing overlap decoding; one is used when only one image
    fits, or there is one image. Never more than this job's share of what
    /dev/shm has free, ``jobs`` being the shard jobs that may still take
    theirs (this one included): writing past it kills the process with SIGBUS.
    """
    if n == 0:
        return 0, 0
    share = free_bytes // max(1, jobs)
    usable = min(budget_bytes, share)
    if usable < image_bytes:
        need = math.ceil(image_bytes / MB)
        if budget_bytes < image_bytes:
            raise ImgshardError(f"shm_budget_mb: {budget_bytes // MB} MB is less than one image ({need} MB)")
        each = f", {share // MB} MB for each of the {jobs} shard jobs that run at once," if jobs > 1 else ""
        raise ImgshardError(
            f"/dev/shm has {free_bytes // MB} MB free{each} but one image needs {need} MB:"
            f" free some, raise its size (docker run --shm-size={2 * need * max(1, jobs)}m)"
            + (", or run fewer jobs at once (--cores)" if jobs > 1 else "")
        )
    fit = usable // image_bytes
    if fit < 2 or n < 2:
        return min(fit, n), 1
    return min(fit // 2, math.ceil(n / MIN_BATCHES)), 2


def mp_context(start_method: str):
    """The multiprocessing context workers start in.

    fork is unsafe in a process that has already run OpenCV code: the child
    inherits OpenCV's thread pool in a locked state and its first imread can
    hang forever. A shard job runs none before its workers exist, so it forks;
    other callers get forkserver, whose server imports this module once, so
    each worker starts without paying for cv2's import.
    """
    ctx = get_context(start_method)
    if start_method == "forkserver":
        ctx.set_forkserver_preload([__name__])
    return ctx


class Workers:
    """``count`` worker processes attached to the buffers ``names`` (and ``mask_names``)."""

    def __init__(self, count: int, start_method: str, names: list[str], mask_names: list[str], geometry: Geometry):
        self.count = count
        self.pool = ProcessPoolExecutor(
            max_workers=count,
            mp_context=mp_context(start_method),
            initializer=_init_worker,
            initargs=(names, mask_names, geometry),
        )

    def submit(self, k: int, paths: list[str], rles: list[tuple[str, ...]] | None) -> list:
        """Decode ``paths`` into rows 0.. of buffer ``k``: the largest files first, in tasks that shrink
        towards the end, so that no worker is left alone with a heavy image while the others wait."""
        order = sorted(range(len(paths)), key=lambda i: -_file_size(paths[i]))
        return [
            self.pool.submit(
                _decode_chunk,
                k,
                rows,
                [paths[i] for i in rows],
                [rles[i] for i in rows] if rles is not None else None,
            )
            for rows in guided_tasks(order, self.count)
        ]

    @staticmethod
    def collect(futures, progress, shard: int) -> list[Decoded]:
        """Wait for ``futures``; their results in buffer-row order (``progress.update`` told of each task's, if given)."""
        decoded: list[Decoded] = []
        remaining = set(futures)
        try:
            while remaining:
                done, remaining = wait(remaining, return_when=FIRST_COMPLETED)  # each task counted as it ends
                for fut in done:
                    part = fut.result()
                    decoded.extend(part)
                    if progress is not None:
                        progress.update(len(part))
        except BrokenProcessPool:
            raise ImgshardError(
                f"shard {shard}: a worker process died (killed, or out of memory); nothing was written"
            ) from None
        decoded.sort(key=lambda d: d.row)
        return decoded

    def stop(self, kill: bool) -> None:
        if kill:
            # No public way to stop workers mid-task before Python 3.14's terminate_workers().
            terminate = getattr(self.pool, "terminate_workers", None)
            if terminate is not None:
                terminate()
            else:
                for proc in list((getattr(self.pool, "_processes", None) or {}).values()):
                    proc.terminate()
        self.pool.shutdown(wait=True, cancel_futures=True)


class Decoder:
    """The images ``sources`` (with ``rles`` when the shard stores ``k_masks`` masks) decoded batch by batch.

    ``batches``: (first, end) positions in ``sources`` of each batch; ``collect(b)`` waits for batch
    ``b`` and gives (what the workers said, in buffer-row order; its image buffer; its mask buffer),
    ``release(b)`` hands its buffer to the batch after next.
    """

    def __init__(self, job, tag: str, sources: list[str], rles: list[tuple[str, ...]] | None, k_masks: int):
        self.job, self.sources, self.rles = job, sources, rles
        height, width = job.geometry.shape
        bits = mask_bytes((height, width, k_masks)) if k_masks else 0
        self.names = [shm.segment_name(tag, job.shard, k) for k in range(2)]
        self.mask_names = [shm.segment_name(tag, job.shard, k, "m") for k in range(2)] if k_masks else []
        self.buffers: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []
        self.pool = None
        self._failed = False
        try:
            # Sized and allocated under one lock with the jobs that run beside this one: each takes its
            # share of what /dev/shm really has free, and the next sees what is left.
            with shm.reservation():
                self.rows, self.count = plan_buffers(
                    len(sources), height * width * 3 + bits, job.shm_budget_mb * MB, shm.free_bytes(), max(1, job.jobs_at_once - shm.holders())
                )
                self.names, self.mask_names = self.names[: self.count], self.mask_names[: self.count]
                for name in self.names:
                    self.buffers.append(shm.create(name, (self.rows, height, width, 3), reserve=True))
                for name in self.mask_names:
                    self.masks.append(shm.create(name, (self.rows, bits), reserve=True))
            n, rows = len(sources), self.rows
            self.batches = [(s, min(s + rows, n)) for s in range(0, n, rows)] if n else []
            if sources:
                self.pool = Workers(max(1, min(job.workers, n)), job.start_method, self.names, self.mask_names, job.geometry)
            # Every batch whose buffer is free is queued: with two buffers the workers go on to the
            # next batch while the parent writes this one, instead of waiting for its last image.
            self._pending = {b: self._submit(b) for b in range(min(self.count, len(self.batches)))}
        except BaseException:
            self.close()
            raise

    def _submit(self, b: int) -> list:
        s, e = self.batches[b]
        return self.pool.submit(b % self.count, self.sources[s:e], self.rles[s:e] if self.rles is not None else None)

    def collect(self, b: int) -> tuple[list[Decoded], np.ndarray, np.ndarray | None]:
        k = b % self.count
        decoded = Workers.collect(self._pending.pop(b), self.job.progress, self.job.shard)
        return decoded, self.buffers[k], self.masks[k] if self.masks else None

    def release(self, b: int) -> None:
        if b + self.count < len(self.batches):
            self._pending[b + self.count] = self._submit(b + self.count)

    def close(self) -> None:
        try:
            if self.pool is not None:
                self.pool.stop(kill=self._failed)
        finally:
            for name in self.names + self.mask_names:
                shm.delete(name)

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is not None:  # the job is failing: its workers are killed, not waited for
            self._failed = True
        self.close()
