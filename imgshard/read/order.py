"""Which rows an epoch visits, in which order, and which of them are this rank's: the Loader's traversal orders.

Three orders behind one interface, ``order.part(seed, epoch, rank, world_size, drop_last)``:

- ``Sequential`` (``shuffle=False``): the stored order;
- ``Random`` (``shuffle=True``): a permutation drawn from ``(seed, epoch)``.
  Under DDP each rank takes every ``world_size``-th row of it, as
  ``torch.utils.data.DistributedSampler`` does (sampler.py);
- ``Blocks`` (``shuffle="block"``), for datasets bigger than memory: the
  stored rows are cut into blocks of consecutive rows (``block_bytes`` each, one
  read of the disk) and the blocks are permuted; a rank takes a contiguous
  share of that sequence (padded or cut as DistributedSampler pads or cuts),
  so it reads its own blocks and no other rank's. Its rows are then drawn
  from an *active set* of ``2 x batch_size`` blocks, each batch taking at most
  one row from any block (FFCV's quasi-random order takes a random page of its
  active set for each sample; taking each block at most once per batch is what
  keeps a batch as mixed as a full shuffle's, when blocks are homogeneous:
  the class folders of an ImageFolder set are long runs of the stored order).
  An exhausted block leaves the set and the next block of the permutation
  enters. Every row comes exactly once per epoch, in an order drawn from
  ``(seed, epoch)``.
"""

from __future__ import annotations

import math

import numpy as np

from . import sampler


class Sequential:
    def __init__(self, n: int):
        self.n = n

    def part(self, seed: int, epoch: int, rank: int, world_size: int, drop_last: bool) -> np.ndarray:
        return sampler.rank_part(np.arange(self.n, dtype=np.int64), rank, world_size, drop_last)


class Random:
    def __init__(self, n: int):
        self.n = n

    def part(self, seed: int, epoch: int, rank: int, world_size: int, drop_last: bool) -> np.ndarray:
        return sampler.rank_part(sampler.epoch_order(self.n, True, seed, epoch), rank, world_size, drop_last)


class Blocks:
    """``blocks``: (first row, rows) of each block, in stored order, covering the rows once."""

    def __init__(self, blocks: list[tuple[int, int]], batch_size: int, active: int | None = None):
        self.starts = np.asarray([b[0] for b in blocks], np.int64)
        self.counts = np.asarray([b[1] for b in blocks], np.int64)
        self.n = int(self.counts.sum())
        self.batch_size = batch_size
        self.active = active or 2 * batch_size
        # Each row's block, for the reader: rows are numbered in stored order.
        self.block_of = np.repeat(np.arange(len(blocks), dtype=np.int64), self.counts)

    def part(self, seed: int, epoch: int, rank: int, world_size: int, drop_last: bool) -> np.ndarray:
        rng = np.random.default_rng([seed, epoch, 0xB10C])
        order = rng.permutation(len(self.counts))
        rows = _rows_of_blocks(self.starts[order], self.counts[order])
        # This rank's contiguous share of the permuted sequence, padded (or cut) to as many rows as the others.
        n = len(rows)
        if drop_last:
            each = n // world_size
        else:
            each = math.ceil(n / world_size) if n else 0
            if each * world_size > n and n:
                rows = np.concatenate([rows, np.resize(rows, each * world_size - n)])
        mine = rows[rank * each : (rank + 1) * each]
        return self._draw(mine, rng_for_rank(seed, epoch, rank))

    def _draw(self, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``rows`` (whole blocks, in permuted order, each block's rows together) in active-set order."""
        n = len(rows)
        if n == 0:
            return rows
        # Groups: the runs of one block (padding may bring a block back: a group of its own), each in random order.
        starts = np.flatnonzero(np.r_[True, self.block_of[rows[1:]] != self.block_of[rows[:-1]]])
        sizes = np.diff(np.r_[starts, n])
        group = np.repeat(np.arange(len(starts)), sizes)
        rows = rows[np.lexsort((rng.random(n), group))]
        # The active set: slots holding a group and how far into it the epoch is.
        slots = min(self.active, len(starts))
        slot_group = np.arange(slots)
        slot_pos = np.zeros(slots, np.int64)
        queued = slots  # the next group to enter
        out = np.empty(n, np.int64)
        filled = 0
        while filled < n:
            want = min(self.batch_size, n - filled)
            while want:
                live = np.flatnonzero(slot_pos < sizes[slot_group]) if len(slot_group) else np.zeros(0, np.int64)
                # One row from each of ``take`` distinct live blocks (more from one only when fewer are left).
                take = min(want, len(live))
                picks = rng.choice(live, size=take, replace=False)
                out[filled : filled + take] = rows[starts[slot_group[picks]] + slot_pos[picks]]
                slot_pos[picks] += 1
                filled += take
                want -= take
                done = picks[slot_pos[picks] == sizes[slot_group[picks]]]
                if len(done) and queued < len(starts):  # exhausted blocks leave; the next of the permutation enter
                    enter = min(len(done), len(starts) - queued)
                    slot_group[done[:enter]] = np.arange(queued, queued + enter)
                    slot_pos[done[:enter]] = 0
                    queued += enter
        return out


def rng_for_rank(seed: int, epoch: int, rank: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, rank, 0xD4A3])


def _rows_of_blocks(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The rows of blocks (first row, count), block after block."""
    if len(counts) == 0:
        return np.zeros(0, np.int64)
    ends = np.cumsum(counts)
    offsets = np.repeat(starts - (ends - counts), counts)
    return np.arange(int(ends[-1]), dtype=np.int64) + offsets


def blocks_of(layout, block_bytes: int) -> list[tuple[int, int]]:
    """Blocks of consecutive rows that one read fetches: rows of one file stored back to back (or, read
    through h5py, at consecutive rows of it), at most ``block_bytes`` a block as delivered."""
    n = len(layout.file_of)
    if n == 0:
        return []
    per_block = max(1, block_bytes // max(1, layout.row_bytes))
    direct = layout.offset >= 0
    next_to = np.zeros(n, bool)
    next_to[1:] = (layout.file_of[1:] == layout.file_of[:-1]) & np.where(
        direct[1:] & direct[:-1],
        layout.offset[1:] == layout.offset[:-1] + layout.size[:-1],
        layout.row_of[1:] == layout.row_of[:-1] + 1,
    )
    blocks = []
    starts = np.flatnonzero(~next_to).tolist() + [n]
    for s, e in zip(starts[:-1], starts[1:]):
        for first in range(s, e, per_block):
            blocks.append((first, min(per_block, e - first)))
    return blocks
