"""Step 4, write: one shard's HDF5 file, and the index datasets every file carries.

A shard file is written under a temporary name and renamed only when complete,
so neither Snakemake nor the gather can ever see half of one.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import shutil

import h5py
import numpy as np
import psutil

from . import __version__
from .errors import DiskFull
from .space import human

IMAGES = "images"
PATHS = "paths"
SHA256 = "sha256"
ORIGINAL_SIZE = "original_size"
SKIPPED = "skipped"  # group: paths and reasons of the images on_error: skip left out
MASKS = "masks"
LABELS = "labels"
CLASS_COUNTS = "class_counts"  # attribute of masks or labels: images per class
ROW_KEYS = "row_keys"  # shard files only: what each row was made from (see reuse.py)
ROW_KEY_DTYPE = "S32"
# Shard files only: the row of ``images`` (and ``masks``) that holds each listed
# image. A fresh file stores them in list order; a rerun that adds or removes
# images in place (reuse.py) puts new ones in freed or appended rows instead of
# shifting every row after them. Rows no image lists are zeros.
SLOTS = "slots"


def mask_compression(compression: str) -> dict:
    # 0/1 masks shrink tens of times even with lzf, for almost no CPU: never store them raw.
    return compression_args("lzf" if compression == "none" else compression)


def write_labels(f: h5py.File, values: list[int], classes) -> None:
    ds = f.create_dataset(LABELS, data=np.asarray(values, dtype=np.int64).reshape(-1))
    ds.attrs["classes"] = list(classes)


def target_of(f: h5py.File) -> h5py.Dataset | None:
    """The ``masks`` or ``labels`` dataset of ``f``, if it has one."""
    return next((f[name] for name in (MASKS, LABELS) if name in f), None)

PATH_DTYPE = h5py.string_dtype("utf-8")
SHA256_DTYPE = h5py.string_dtype("ascii", 64)


def compression_args(compression: str) -> dict:
    return {"none": {}, "lzf": {"compression": "lzf"}, "gzip": {"compression": "gzip", "compression_opts": 4}}[
        compression
    ]


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


def temp_name(path: str) -> str:
    return f"{path}.tmp-{os.getpid()}"


def remove_stale_temps(path: str) -> None:
    """Remove temporary files of ``path`` left by processes that died before renaming them."""
    for tmp in glob.glob(glob.escape(path) + ".tmp-*"):
        pid = tmp.rsplit("-", 1)[-1]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            os.unlink(tmp)


def write_index(f: h5py.File, paths: list[str], sha256: list[str], sizes: np.ndarray) -> None:
    f.create_dataset(PATHS, data=np.array(paths, dtype=object), dtype=PATH_DTYPE)
    f.create_dataset(SHA256, data=np.array(sha256, dtype="S64"), dtype=SHA256_DTYPE)
    f.create_dataset(ORIGINAL_SIZE, data=np.asarray(sizes, dtype=np.int32).reshape(-1, 2))


def write_skipped(f: h5py.File, skipped: list[tuple[str, str]]) -> None:
    group = f.create_group(SKIPPED)
    group.create_dataset(PATHS, data=np.array([p for p, _ in skipped], dtype=object), dtype=PATH_DTYPE)
    group.create_dataset("reasons", data=np.array([r for _, r in skipped], dtype=object), dtype=PATH_DTYPE)


def read_skipped(f: h5py.File) -> list[tuple[str, str]]:
    group = f[SKIPPED]
    return list(zip(group[PATHS].asstr()[()], group["reasons"].asstr()[()]))


def read_slots(f: h5py.File) -> np.ndarray:
    """Each listed image's row in ``images`` (list order in files written before slots existed)."""
    return f[SLOTS][()] if SLOTS in f else np.arange(len(f[PATHS]))


def read_index(f: h5py.File) -> tuple[list[str], list[str], np.ndarray]:
    return (
        list(f[PATHS].asstr()[()]),
        list(f[SHA256].asstr()[()]),
        f[ORIGINAL_SIZE][()],
    )


def write_attrs(f: h5py.File, attrs: dict) -> None:
    f.attrs["imgshard_version"] = __version__
    for key, value in attrs.items():
        f.attrs[key] = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value


class ShardWriter:
    """Appends decoded batches to ``images``; ``finish`` adds the index and makes the file visible."""

    def __init__(self, path: str, capacity: int, shape: tuple[int, int], compression: str, labels=None):
        self.path = path
        self.tmp = temp_name(path)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        remove_stale_temps(path)
        height, width = shape
        self._file = None
        try:
            self._file = h5py.File(self.tmp, "w")
            self._create(capacity, height, width, compression, labels)
        except BaseException:  # an interrupt before the caller holds this writer: nobody else would remove the file
            if self._file is not None:
                self._file.close()
            if os.path.exists(self.tmp):
                os.unlink(self.tmp)
            raise

    def _create(self, capacity: int, height: int, width: int, compression: str, labels) -> None:
        # One chunk per image: readers fetch single images in random order.
        self.images = self._file.create_dataset(
            IMAGES,
            shape=(capacity, height, width, 3),
            maxshape=(None, height, width, 3),
            dtype=np.uint8,
            chunks=(1, height, width, 3),
            **compression_args(compression),
        )
        self.labels = labels
        self.masks = None
        if labels is not None and labels.kind == "masks":
            k = len(labels.classes)
            self.masks = self._file.create_dataset(
                MASKS,
                shape=(capacity, height, width, k),
                maxshape=(None, height, width, k),
                dtype=np.uint8,
                chunks=(1, height, width, k),
                **mask_compression(compression),
            )
            self.masks.attrs["classes"] = list(labels.classes)
        self.failed = False

    def write(self, buffer: np.ndarray, pairs: list[tuple[int, int]], masks: np.ndarray | None = None) -> None:
        """Rows of ``buffer`` (and ``masks``) into the file: (buffer row, file row) pairs, ascending.

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

    def copy(self, images: h5py.Dataset, masks: h5py.Dataset | None, pairs: list[tuple[int, int]]) -> None:
        """Rows of another file's ``images`` (and ``masks``) into this one as stored: (their row, file row) pairs."""
        if not pairs:
            return
        ensure_space(self.path, (_row_bytes(images) + (_row_bytes(masks) if masks is not None else 0)) * len(pairs))
        with self._space_guard():
            for old, new in pairs:
                copy_chunk(images, old, self.images, new)
                if self.masks is not None:
                    copy_chunk(masks, old, self.masks, new)

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

    def finish(
        self,
        paths: list[str],
        sha256: list[str],
        sizes: np.ndarray,
        skipped: list[tuple[str, str]],
        attrs: dict,
        labels: list[int] | None = None,
        row_keys: list[bytes] | None = None,
    ) -> None:
        """Cut the file to its ``len(paths)`` rows, add the index, and make it visible."""
        count = len(paths)
        self.images.resize(count, axis=0)
        if self.masks is not None:
            self.masks.resize(count, axis=0)
        if self.labels is not None and self.labels.kind == "labels":
            write_labels(self._file, labels or [], self.labels.classes)
        if self.labels is not None:
            # Per class, so `imgshard info` can say how many without reading every mask.
            target_of(self._file).attrs[CLASS_COUNTS] = self.labels.counts(paths)
        ensure_space(self.path, 0)
        with self._space_guard():
            write_index(self._file, paths, sha256, sizes)
            write_skipped(self._file, skipped)
            if row_keys is not None:
                self._file.create_dataset(ROW_KEYS, data=np.array(row_keys, dtype=ROW_KEY_DTYPE))
            self._file.create_dataset(SLOTS, data=np.arange(count, dtype=np.int64))
            write_attrs(self._file, attrs)
            self._file.close()
        os.replace(self.tmp, self.path)

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


def write_rows_in_place(
    f: h5py.File, buffer: np.ndarray | None, masks: np.ndarray | None, pairs: list[tuple[int, int]], rows: int, zeroed: list[int]
) -> None:
    """Change an existing shard file's rows: grow ``images`` (and ``masks``) to ``rows``,
    write (buffer row, file row) ``pairs``, and zero the ``zeroed`` rows, whose images left."""
    stacks = [(f[IMAGES], buffer)] + ([(f[MASKS], masks)] if MASKS in f else [])
    for ds, _ in stacks:
        if rows > ds.shape[0]:
            ds.resize(rows, axis=0)
    for ds, src in stacks:
        for b, row in pairs:
            ds.write_direct(src, np.s_[b], np.s_[row])
        if zeroed:
            blank = np.zeros(ds.shape[1:], ds.dtype)
            for row in zeroed:
                ds.write_direct(blank, None, np.s_[row])


def rewrite_index(f: h5py.File, paths, sha256, sizes, row_keys, slots, attrs: dict, labels=None, class_values=None) -> None:
    """Replace an existing shard file's index with that of the images it lists now."""
    for name in (PATHS, SHA256, ORIGINAL_SIZE, ROW_KEYS, SLOTS, SKIPPED) + ((LABELS,) if class_values is not None else ()):
        if name in f:
            del f[name]
    write_index(f, paths, sha256, sizes)
    write_skipped(f, [])
    f.create_dataset(ROW_KEYS, data=np.array(row_keys, dtype=ROW_KEY_DTYPE))
    f.create_dataset(SLOTS, data=np.asarray(slots, dtype=np.int64))
    if class_values is not None:
        write_labels(f, class_values, labels.classes)
    if labels is not None:
        target_of(f).attrs[CLASS_COUNTS] = labels.counts(paths)
    write_attrs(f, attrs)


def runs(pairs: list[tuple[int, int]]):
    """(first source row, first destination row, length) of each run where both rise by one."""
    start = 0
    for i in range(1, len(pairs) + 1):
        if i == len(pairs) or pairs[i] != (pairs[i - 1][0] + 1, pairs[i - 1][1] + 1):
            yield pairs[start][0], pairs[start][1], i - start
            start = i


def _row_bytes(ds: h5py.Dataset) -> int:
    return int(np.prod(ds.shape[1:])) * ds.dtype.itemsize


def copy_chunk(src: h5py.Dataset, old: int, dst: h5py.Dataset, new: int) -> None:
    """Row ``old`` of ``src`` to row ``new`` of ``dst`` as stored, one chunk each: never decompressed."""
    zeros = (0,) * (src.ndim - 1)
    filter_mask, chunk = src.id.read_direct_chunk((old, *zeros))
    dst.id.write_direct_chunk((new, *zeros), chunk, filter_mask)
