"""Read: which rows an epoch visits, in which order, and which of them are this process's.

An epoch's order is a permutation drawn from ``(seed, epoch)``, so every rank
draws the same one and a resumed run draws it again. Under DDP each rank takes
every ``world_size``-th row of it, as ``torch.utils.data.DistributedSampler``
does: the order is padded with its own first rows (or cut, with ``drop_last``)
to a multiple of ``world_size``, so every rank gets as many rows, and as many
batches, as the others, and no rank waits forever on an uneven last batch.
"""

from __future__ import annotations

import math

import numpy as np


def epoch_order(n: int, shuffle: bool, seed: int, epoch: int) -> np.ndarray:
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    return np.random.default_rng([seed, epoch]).permutation(n).astype(np.int64)


def rank_part(order: np.ndarray, rank: int, world_size: int, drop_last: bool) -> np.ndarray:
    """This rank's rows of the epoch's ``order``."""
    n = len(order)
    if world_size == 1:
        return order
    if drop_last:
        total = (n // world_size) * world_size
        order = order[:total]
    else:
        total = math.ceil(n / world_size) * world_size
        if total > n:
            order = np.concatenate([order, np.resize(order, total - n)]) if n else order
    return order[rank:total:world_size]


def batch_count(rows: int, batch_size: int, drop_last: bool) -> int:
    return rows // batch_size if drop_last else math.ceil(rows / batch_size)


def check(batch_size: int, rank: int, world_size: int) -> None:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not one of world_size {world_size}'s ranks (0 to {world_size - 1})")
