"""Read: ``Loader``, the training feed at the speed of the stored bytes, in one process.

    loader = Loader("results/train.h5", batch_size=64, shuffle=True, seed=0, rank=0, world_size=1)
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for images, targets in loader:      # (B, H, W, 3) uint8 and masks, labels or None
            ...

Reader threads fill a ring of preallocated batch buffers a few batches ahead
of the caller, each row with one ``preadv`` at the offset the layout gave at
open (read/snapshot.py): the kernel copies while the GIL is released. A
batch stays valid while the caller takes the next one (``HOLD`` batches in
all): copy it to keep it longer. The loader reads the snapshot it opened for
as long as it lives; ``refresh()`` between epochs moves it to a newer one.

``shuffle`` picks the epoch's order (order.py): False the stored order, True a
full permutation, ``"block"`` the order for datasets bigger than memory, read
by whole blocks of ``block_bytes`` (blocks.py).
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..errors import ImgshardError
from ..format import LABELS, MASKS
from . import sampler
from .blocks import ReadAhead
from .order import Blocks, Random, Sequential, blocks_of
from .snapshot import Snapshot

# Batches the caller may hold at once: the one it was given and the one before.
HOLD = 2
# shuffle="block": a block is one read of the disk, asked for this many batches before it is needed
# (docs/design.md has the measurements behind both).
BLOCK_BYTES = 4 << 20
AHEAD_BATCHES = 16


class Loader:
    """Batches of a dataset as NumPy arrays, shuffled per epoch, this rank's part, resumable mid-epoch.

    ``threads`` read ahead (default: 2, or 1 on one core); the ring holds
    ``threads + HOLD`` batches. Each epoch visits every row once (with
    ``world_size`` > 1: padded as DistributedSampler pads, or cut with
    ``drop_last``). ``state_dict()`` counts the batches the caller has taken,
    not those read ahead. ``shuffle="block"``: rows drawn from an active set of
    ``2 x batch_size`` blocks of ``block_bytes``, each block asked of the kernel
    whole ``AHEAD_BATCHES`` batches before it is needed (blocks.py).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        batch_size: int,
        shuffle: bool | str = True,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
        threads: int | None = None,
        block_bytes: int = BLOCK_BYTES,
    ):
        sampler.check(batch_size, rank, world_size)
        if shuffle not in (True, False, "block"):
            raise ValueError(f"shuffle must be True, False or 'block', not {shuffle!r}")
        self.block_bytes = block_bytes
        self.path = os.fspath(path)
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.rank, self.world_size = rank, world_size
        self.threads = threads or min(2, os.cpu_count() or 1)
        self.epoch = 0
        self._position = 0  # batches of this epoch the caller has taken
        self._finished = False  # the last iteration ran to its end: the next one is a new pass
        self._iterating = False
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="imgshard-loader")
        self._open(Snapshot(self.path))

    def _open(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self._blocks = None
        if self.shuffle == "block":
            blocks = blocks_of(snapshot.layout, self.block_bytes)
            self._order = Blocks(blocks, self.batch_size)
            self._blocks = ReadAhead(snapshot, blocks, AHEAD_BATCHES)
        else:
            self._order = Random(len(snapshot)) if self.shuffle else Sequential(len(snapshot))
        ring = self.threads + HOLD
        b = self.batch_size
        self._images = [np.empty((b, *snapshot.shape[1:]), snapshot.dtype) for _ in range(ring)]
        # One writable view per row, made once: the hot loop hands them to preadv as they are.
        self._views = [[memoryview(buf[j]).cast("B") for j in range(b)] for buf in self._images]
        if snapshot.target == MASKS:
            self._targets = [np.empty((b, *snapshot.target_shape), np.uint8) for _ in range(ring)]
        elif snapshot.target == LABELS:
            self._targets = [np.empty(b, np.int64) for _ in range(ring)]
        else:
            self._targets = None

    # --- what an epoch is ------------------------------------------------------------

    def __len__(self) -> int:
        """Batches per epoch for this rank."""
        rows = len(sampler.rank_part(np.arange(len(self.snapshot)), self.rank, self.world_size, self.drop_last))
        return sampler.batch_count(rows, self.batch_size, self.drop_last)

    @property
    def classes(self) -> list[str]:
        return self.snapshot.classes

    @property
    def target(self) -> str | None:
        """What ``targets`` are: "masks", "labels", or None."""
        return self.snapshot.target

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next iteration reads (its permutation). A resumed state's own epoch keeps its position."""
        if epoch != self.epoch:
            self.epoch, self._position, self._finished = epoch, 0, False

    def _batches(self) -> list[np.ndarray]:
        part = self._order.part(self.seed, self.epoch, self.rank, self.world_size, self.drop_last)
        count = sampler.batch_count(len(part), self.batch_size, self.drop_last)
        return [part[k * self.batch_size : (k + 1) * self.batch_size] for k in range(count)]

    # --- reading ---------------------------------------------------------------------

    def _read(self, j: int, rows: np.ndarray, slot: int) -> None:
        if self._blocks is not None:
            self._blocks.before_batch(j)
        rows = rows.tolist()
        self.snapshot.read_images(rows, self._views[slot], self._images[slot])
        if self.snapshot.target == MASKS:
            self.snapshot.read_masks(rows, self._targets[slot])
        elif self.snapshot.target == LABELS:
            np.take(self.snapshot.labels, rows, out=self._targets[slot][: len(rows)])

    def __iter__(self):
        if self._iterating:
            raise RuntimeError("this Loader is already being iterated")
        batches = self._batches()
        if self._finished:
            self._position, self._finished = 0, False
        start = self._position
        ring = len(self._images)
        if self._blocks is not None:
            self._blocks.plan(batches, start)
        self._iterating = True
        pending: deque = deque()
        try:
            for j in range(start, min(start + self.threads, len(batches))):
                pending.append(self._pool.submit(self._read, j, batches[j], j % ring))
            for j in range(start, len(batches)):
                pending.popleft().result()
                ahead = j + self.threads
                if ahead < len(batches):  # into the slot neither this batch nor the one before uses
                    pending.append(self._pool.submit(self._read, ahead, batches[ahead], ahead % ring))
                m = len(batches[j])
                self._position = j + 1
                targets = self._targets[j % ring][:m] if self._targets is not None else None
                yield self._images[j % ring][:m], targets
            self._finished = True
        finally:
            for fut in pending:
                fut.cancel()
            for fut in pending:
                if not fut.cancelled():
                    fut.exception()  # a read still running must not write into a buffer handed out next time
            self._iterating = False

    # --- resuming and moving on ------------------------------------------------------

    def state_dict(self) -> dict:
        """Where this loader stands: the epoch, and the batches of it the caller has taken."""
        return {
            "epoch": self.epoch,
            "batch": self._position,
            "rows": len(self.snapshot),
            "seed": self.seed,
            "shuffle": self.shuffle,
            "batch_size": self.batch_size,
            "drop_last": self.drop_last,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue where ``state`` stood: the next iteration yields exactly the batches not yet taken."""
        for key in ("rows", "seed", "shuffle", "batch_size", "drop_last", "world_size"):
            mine = len(self.snapshot) if key == "rows" else getattr(self, key)
            if state[key] != mine:
                raise ImgshardError(f"{self.path}: cannot resume: the state has {key} {state[key]!r}, this loader {mine!r}")
        self.epoch, self._position, self._finished = state["epoch"], state["batch"], False

    def refresh(self) -> bool:
        """Move to the newest snapshot of the dataset if one was published since this loader opened it; True if it did.

        Call it between epochs: the next epoch reads the new rows (a new count
        makes a new permutation). The old snapshot is released for cleanup.
        """
        if self._iterating:
            raise RuntimeError("refresh() between epochs, not while iterating")
        if self.snapshot.is_current():
            return False
        old, old_blocks = self.snapshot, self._blocks
        self._open(Snapshot(self.path))
        if old_blocks is not None:
            old_blocks.close()
        old.close()
        self._position, self._finished = 0, False
        return True

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        if self._blocks is not None:
            self._blocks.close()
        self.snapshot.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def batches(path: str | os.PathLike, batch_size: int, shuffle: bool = False, seed: int = 0, drop_last: bool = False):
    """Yield ``(images, targets)`` batches as NumPy arrays, for frameworks other than PyTorch: one epoch of a ``Loader``.

    A batch is a view of the loader's ring: it stays valid while the next one
    is taken, so copy it to keep it longer. ``targets`` is None when the file
    has no masks or labels.
    """
    with Loader(path, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last) as loader:
        yield from loader
