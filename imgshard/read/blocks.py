"""The Loader's reads in block order (``shuffle="block"``): each block read whole, by threads, batches ahead.

A full shuffle reads one row (150 KB at 224x224) at a random place per
image: from a disk, with the page cache too small for the dataset, that is
a small random read each. In block order (order.py) the rows of a batch come
from blocks of consecutive rows that the order visits together; as the
batch ``ahead_batches`` ahead of the one being read first needs a block,
one of ``threads`` read-ahead threads reads the block whole, with one
``preadv`` (a large read for the disk), into a buffer it reuses. The rows
are then read as in any order, one ``preadv`` each into the batch buffer,
from the page cache. A block already in the page cache is not read again
(two one-byte reads that may not wait tell), so with the cache warm the
order costs about what a full shuffle costs. This process holds one block
buffer per read-ahead thread; the page cache holds about the active set
(2 x batch_size blocks) plus the blocks read ahead.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np


class ReadAhead:
    """Asks the kernel for the blocks of ``snapshot`` (``blocks``: (first row, rows), stored order) before the batches read them."""

    def __init__(self, snapshot, blocks: list[tuple[int, int]], ahead_batches: int = 4, threads: int = 4):
        self.snapshot = snapshot
        self.starts = np.asarray([b[0] for b in blocks], np.int64)
        self.counts = np.asarray([b[1] for b in blocks], np.int64)
        self.block_of = np.repeat(np.arange(len(blocks), dtype=np.int64), self.counts)
        self.ahead = ahead_batches
        # What to read for each block: its rows' byte range in each stored dataset (images, masks' bits).
        self.reads = snapshot.block_reads(blocks)
        self._lock = threading.Lock()
        self._order: list[int] = []  # blocks in the order the batches first need them
        self._batch_of: list[int] = []  # and that batch
        self._asked = 0
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="imgshard-readahead")
        self._local = threading.local()

    def plan(self, batches: list[np.ndarray], first: int) -> None:
        """The batches an iteration reads, from batch ``first`` on."""
        seen: set[int] = set()
        order, batch_of = [], []
        for j in range(first, len(batches)):
            for block in np.unique(self.block_of[batches[j]]).tolist():
                if block not in seen:
                    seen.add(block)
                    order.append(block)
                    batch_of.append(j)
        with self._lock:
            self._order, self._batch_of, self._asked = order, batch_of, 0

    def before_batch(self, j: int) -> None:
        """Called as batch ``j`` is read: start reading every block a batch up to ``j + ahead`` needs first."""
        with self._lock:
            start = self._asked
            while self._asked < len(self._order) and self._batch_of[self._asked] <= j + self.ahead:
                self._asked += 1
            todo = self._order[start : self._asked]
        for block in todo:
            self._pool.submit(self._fetch, block)

    def _fetch(self, block: int) -> None:
        for span in self.reads[block]:  # rows HDF5 reads have no byte range of their own: none here
            self._read_whole(*span)

    def _read_whole(self, file: int, offset: int, size: int) -> None:
        fd = self.snapshot.fds()[file]
        if _cached(fd, offset) and _cached(fd, offset + size - 1):
            return
        # Read whole into a buffer of this thread's, thrown away: what stays is the block in the page
        # cache. posix_fadvise(WILLNEED) does the same without the copy, and was slower (docs/design.md).
        buf = getattr(self._local, "buf", None)
        if buf is None or len(buf) < size:
            buf = self._local.buf = memoryview(bytearray(size))
        os.preadv(fd, [buf[:size]], offset)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

_PROBE = memoryview(bytearray(1))


def _cached(fd: int, offset: int) -> bool:
    """Whether the page holding byte ``offset`` is in the page cache: a read that may not wait for the disk.

    Asking the kernel for a block it already holds costs 60 us per 4 MiB (it walks every page); this
    costs about 2, so a warm epoch pays next to nothing for the hints.
    """
    try:
        return os.preadv(fd, [_PROBE], offset, os.RWF_NOWAIT) == 1
    except BlockingIOError:
        return False
    except OSError:  # a filesystem without RWF_NOWAIT: ask anyway
        return False
