"""The part file a shard job writes (step 3, assemble): the immutable home of some rows of a shard's pixels.

A part is written under a temporary name and renamed into ``<stem>.shards/parts/``
only when complete, and never opened for writing again: a snapshot that maps
it (publish/snapshots.py) reads the same bytes for as long as it is held.
Uncompressed rows (images, and masks' bits) are stored contiguously, one
row after another, so a reader finds row ``r`` at the dataset's offset plus
``r`` rows (read/snapshot.py) without asking HDF5; compressed rows are one
chunk each, whose offsets a reader also takes once, at open. The gather and
``imgshard export`` create their datasets with the same ``create_rows``.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import shutil
import uuid
from dataclasses import dataclass

import h5py
import numpy as np

from ..errors import DiskFull
from ..codecs import create_args, filters_of, mask_bytes
from ..format import BIT_ORDER_ATTR, CLASSES_ATTR, IMAGES, MASK_BITS, MASK_SHAPE_ATTR, PARTS_DIR
from ..plan.space import human
from ..temp import remove_stale_temps, temp_name

# Rows copied from an older part go through a buffer of about this size.
COPY_BYTES = 64 << 20


# Kept free beyond each write's own bytes, for HDF5's metadata (chunk index, attributes).
SPACE_MARGIN = 1 << 20
# h5py objects of a file whose write failed for lack of space: never freed, because
# HDF5 can crash while freeing them (h5py#914). The job exits without finalizing instead.
_UNSAFE_TO_FREE: list = []


def ensure_space(path: str, nbytes: int) -> None:
    """Raise DiskFull naming ``path`` unless its filesystem has room for ``nbytes`` more."""
    folder = os.path.dirname(os.path.abspath(path))
    free = shutil.disk_usage(folder).free
    if nbytes + SPACE_MARGIN > free:
        raise DiskFull(f"{path}: disk full: {human(nbytes)} more to write, {human(free)} free in {folder}; nothing of it was kept")


# How HDF5 fails a write, through h5py: mostly OSError, but a flush while
# closing comes back as RuntimeError ("Can't decrement id ref count (file
# write failed: ... errno = 28 ...)").
HDF5_WRITE_ERRORS = (OSError, RuntimeError)


def disk_full(path: str, error: Exception) -> DiskFull | None:
    """The one-line error for a write to ``path`` that failed with ENOSPC; None for any other failure."""
    if getattr(error, "errno", None) != errno.ENOSPC and "errno = 28," not in str(error):
        return None
    free = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free
    return DiskFull(f"{path}: disk full (No space left on device), {human(free)} free; nothing of it was kept")


def runs(pairs: list[tuple[int, int]]):
    """(first source row, first destination row, length) of each run where both rise by one."""
    start = 0
    for i in range(1, len(pairs) + 1):
        if i == len(pairs) or pairs[i] != (pairs[i - 1][0] + 1, pairs[i - 1][1] + 1):
            yield pairs[start][0], pairs[start][1], i - start
            start = i


def copy_chunk(src: h5py.Dataset, old: int, dst: h5py.Dataset, new: int) -> None:
    """Row ``old`` of ``src`` to row ``new`` of ``dst`` as stored, one chunk each: never decompressed."""
    zeros = (0,) * (src.ndim - 1)
    filter_mask, chunk = src.id.read_direct_chunk((old, *zeros))
    dst.id.write_direct_chunk((new, *zeros), chunk, filter_mask)


def stored_alike(src: h5py.Dataset, dst: h5py.Dataset) -> bool:
    """Whether a chunk of ``src`` is a chunk of ``dst`` as it is: both one row a chunk, through the same filters."""
    return src.chunks is not None and src.chunks == dst.chunks and filters_of(src) == filters_of(dst)


def copy_rows(src: h5py.Dataset, dst: h5py.Dataset, pairs: list[tuple[int, int]]) -> None:
    """Rows of ``src`` into ``dst``, (source row, destination row) pairs: chunk by chunk as stored
    where both are chunked alike (compressed rows stay compressed), else through a buffer."""
    if stored_alike(src, dst):
        for old, new in pairs:
            copy_chunk(src, old, dst, new)
        return
    step = max(1, COPY_BYTES // _row_bytes(src))
    buffer = np.empty((min(step, len(pairs)), *src.shape[1:]), src.dtype)
    for first, to, length in runs(pairs):
        for k in range(0, length, step):
            m = min(step, length - k)
            src.read_direct(buffer, np.s_[first + k : first + k + m], np.s_[0:m])
            dst.write_direct(buffer, np.s_[0:m], np.s_[to + k : to + k + m])


def _row_bytes(ds: h5py.Dataset) -> int:
    return int(np.prod(ds.shape[1:])) * ds.dtype.itemsize


def new_part_name(shard_name: str) -> str:
    """A part's path within the shard folder: new for every part, so no file is ever written twice."""
    return f"{PARTS_DIR}/{shard_name}-{uuid.uuid4().hex[:12]}.h5"


def create_rows(f: h5py.File, name: str, rows: int, tail: tuple, compression: str, **extra) -> h5py.Dataset:
    """``rows`` rows of shape ``tail`` (images, or masks' bits): contiguous when uncompressed (a reader
    finds a row by arithmetic), else one chunk per row (readers fetch single rows in random order)."""
    if compression == "none":
        return f.create_dataset(name, shape=(rows, *tail), dtype=np.uint8, **extra)
    return f.create_dataset(name, shape=(rows, *tail), dtype=np.uint8, chunks=(1, *tail), **create_args(compression), **extra)


def create_mask_bits(f: h5py.File, rows: int, mask_shape: tuple, classes, compression: str, **extra) -> h5py.Dataset:
    """``mask_bits`` for ``rows`` images' masks of ``mask_shape`` (H, W, K), with the attributes that say how to unpack them."""
    ds = create_rows(f, MASK_BITS, rows, (mask_bytes(mask_shape),), compression, **extra)
    describe_mask_bits(ds, mask_shape, classes)
    return ds


def describe_mask_bits(ds: h5py.Dataset, mask_shape: tuple, classes) -> None:
    """The attributes that give ``mask_bits`` its meaning (codecs.py unpacks by them)."""
    ds.attrs[CLASSES_ATTR] = list(classes)
    ds.attrs[MASK_SHAPE_ATTR] = np.asarray(mask_shape, np.int64)
    ds.attrs[BIT_ORDER_ATTR] = "little"


@dataclass(frozen=True)
class Written:
    """A finished part: its name within the shard folder, its rows, its size in bytes."""

    name: str
    rows: int
    bytes: int


class PartWriter:
    """Writes ``capacity`` rows into a new part file; ``finish`` makes it visible, ``abort`` removes it."""

    def __init__(self, shards_dir: str, shard_name: str, capacity: int, shape: tuple[int, int], compression: str, classes=None):
        self.name = new_part_name(shard_name)
        self.path = os.path.join(shards_dir, self.name)
        self.tmp = temp_name(self.path)
        self.capacity = capacity
        folder = os.path.dirname(self.path)
        os.makedirs(folder, exist_ok=True)
        remove_stale_temps(os.path.join(glob.escape(folder), "*"))
        height, width = shape
        self._file = None
        self.failed = False
        try:
            self._file = h5py.File(self.tmp, "w")
            self.images = create_rows(self._file, IMAGES, capacity, (height, width, 3), compression)
            self.masks = None
            if classes:
                self.masks = create_mask_bits(self._file, capacity, (height, width, len(classes)), classes, compression)
        except BaseException:  # an interrupt before the caller holds this writer: nobody else would remove the file
            if self._file is not None:
                self._file.close()
            if os.path.exists(self.tmp):
                os.unlink(self.tmp)
            raise

    def write(self, buffer: np.ndarray, pairs: list[tuple[int, int]], masks: np.ndarray | None = None) -> None:
        """Rows of ``buffer`` (and ``masks``, packed) into the file: (buffer row, file row) pairs, ascending.

        One write_direct call per run of consecutive rows: a batch with nothing
        skipped or reused in between goes in one call.
        """
        if not pairs:
            return
        row_bytes = buffer[0].nbytes + (masks[0].nbytes if masks is not None else 0)
        ensure_space(self.path, row_bytes * len(pairs))
        with self._space_guard():
            for src, dst, count in runs(pairs):
                self.images.write_direct(buffer, np.s_[src : src + count], np.s_[dst : dst + count])
                if self.masks is not None:
                    self.masks.write_direct(masks, np.s_[src : src + count], np.s_[dst : dst + count])

    def copy(self, part: h5py.File, pairs: list[tuple[int, int]]) -> None:
        """Rows of an older part file into this one as stored: (its row, this file's row) pairs."""
        if not pairs:
            return
        images, masks = part[IMAGES], part[MASK_BITS] if MASK_BITS in part else None
        ensure_space(self.path, (_row_bytes(images) + (_row_bytes(masks) if masks is not None else 0)) * len(pairs))
        with self._space_guard():
            copy_rows(images, self.images, pairs)
            if self.masks is not None:
                copy_rows(masks, self.masks, pairs)

    @contextlib.contextmanager
    def _space_guard(self):
        """Turn HDF5's ENOSPC (the disk filled after ensure_space looked) into DiskFull."""
        try:
            yield
        except HDF5_WRITE_ERRORS as e:
            full = disk_full(self.path, e)
            if full is None:
                raise
            self.failed = True
            raise full from None

    def finish(self) -> Written:
        """Close the file and rename it into place."""
        ensure_space(self.path, 0)
        with self._space_guard():
            self._file.close()
        os.replace(self.tmp, self.path)
        return Written(self.name, self.capacity, os.path.getsize(self.path))

    def abort(self) -> None:
        """Remove the temporary file. Raises DiskFull when closing fails on a full disk."""
        failure = None
        if self.failed:
            # Closing would make HDF5 flush to a full disk, and it may crash doing so.
            _UNSAFE_TO_FREE.extend([self._file, self.images, self.masks])
        elif self._file:
            try:
                self._file.close()
            except HDF5_WRITE_ERRORS as e:  # it could not flush what it had cached: the same hazard
                _UNSAFE_TO_FREE.extend([self._file, self.images, self.masks])
                failure = disk_full(self.path, e) or e
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)
        if failure is not None:
            raise failure
