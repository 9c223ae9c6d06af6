"""Read: one snapshot of a dataset, held for as long as a reader reads it, and where each row's bytes are.

Opening ``results/train.h5`` takes a shared ``flock`` on the file it names
now (a snapshot: see imgshard/publish/snapshots.py), so no later run removes that
snapshot or the part files it maps while this reader holds it. Every process
that reads (a DataLoader's workers too) reads that same snapshot: a forked
one through the inherited descriptor, a spawned one by the snapshot's own
name. A newer snapshot is picked up only by opening again (``refresh``).

The layout is read once, at open, into a table of where each row's bytes lie:
its file and its byte offset there, when the images are stored uncompressed
(contiguous, or one chunk per row in files of older imgshard versions). A
batch is then plain ``preadv`` calls into a buffer the caller owns: no HDF5
on the hot path, no per-item Python beyond one call per row, and the GIL
released while the kernel copies. Compressed images (and masks, always
compressed) are read through h5py instead.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass

import h5py
import numpy as np

from ..errors import ImgshardError
from ..format import CLASSES_ATTR, CONFIG_ATTR, IMAGES, LABELS, MASKS, PATHS, SNAPSHOT_ATTR

_INHERITED: list = []  # h5py handles a forked child got from its parent: kept, never closed there


def _lock_shared(path: str, wait: float = 10.0) -> int:
    """An open descriptor of ``path`` with a shared flock on it; raises ImgshardError naming it."""
    deadline = time.monotonic() + wait
    while True:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise ImgshardError(f"{path}: no such file") from None
        try:
            # Refused only while a run checks this very file for readers (microseconds), or a writer has it.
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() > deadline:
                raise ImgshardError(f"{path}: another process holds it open for writing") from None
            time.sleep(0.001)
            continue
        if os.fstat(fd).st_nlink > 0:
            return fd
        # A run removed it as superseded between our open and our lock: the name now means a newer one.
        os.close(fd)


@dataclass
class Layout:
    """Where each row of ``images`` lies: ``files[file_of[i]]`` at byte ``offset[i]`` (-1: read it through
    h5py, at row ``row_of[i]`` of that file's dataset)."""

    files: list[str]  # absolute
    file_of: np.ndarray  # int32
    row_of: np.ndarray  # int64
    offset: np.ndarray  # int64
    row_bytes: int

    @property
    def direct(self) -> bool:
        return bool(len(self.offset) == 0 or self.offset.min() >= 0)


def _file_offsets(ds: h5py.Dataset) -> np.ndarray | None:
    """Byte offset of each row of ``ds`` in its file, or None when rows are not stored plainly (compressed)."""
    rows = ds.shape[0]
    row_bytes = int(np.prod(ds.shape[1:])) * ds.dtype.itemsize
    if ds.chunks is None:
        base = ds.id.get_offset()
        if base is None:  # never written: no storage
            return None if rows else np.zeros(0, np.int64)
        return base + np.arange(rows, dtype=np.int64) * row_bytes
    if ds.compression is not None or ds.chunks != (1, *ds.shape[1:]) or ds.id.get_num_chunks() != rows:
        return None
    offsets = np.empty(rows, np.int64)

    def note(info):
        offsets[info.chunk_offset[0]] = info.byte_offset

    ds.id.chunk_iter(note)
    return offsets


def read_layout(f: h5py.File, dataset_dir: str, own_path: str) -> Layout:
    """The layout of ``f['images']``; virtual sources resolve against ``dataset_dir``, the folder of the dataset as opened."""
    images = f[IMAGES]
    n = images.shape[0]
    row_bytes = int(np.prod(images.shape[1:]))
    if not images.is_virtual:
        offsets = _file_offsets(images)
        return Layout(
            [own_path],
            np.zeros(n, np.int32),
            np.arange(n, dtype=np.int64),
            offsets if offsets is not None else np.full(n, -1, np.int64),
            row_bytes,
        )
    files: list[str] = []
    number: dict[str, int] = {}
    file_of = np.full(n, -1, np.int32)
    row_of = np.zeros(n, np.int64)
    offset = np.full(n, -1, np.int64)
    offsets_of: dict[str, np.ndarray | None] = {}
    for vs in images.virtual_sources():
        path = os.path.normpath(os.path.join(dataset_dir, vs.file_name))
        (d0, *_), (d1, *_) = vs.vspace.get_select_bounds()
        count = d1 - d0 + 1
        s0 = 0 if vs.src_space.get_select_type() == h5py.h5s.SEL_ALL else vs.src_space.get_select_bounds()[0][0]
        if path not in number:
            number[path] = len(files)
            files.append(path)
            offsets_of[path] = source_offsets(path, vs.dset_name, images.shape[1:])
        file_of[d0 : d1 + 1] = number[path]
        row_of[d0 : d1 + 1] = np.arange(s0, s0 + count)
        if offsets_of[path] is not None:
            offset[d0 : d1 + 1] = offsets_of[path][s0 : s0 + count]
    if (file_of < 0).any():
        raise ImgshardError(f"{own_path}: {int((file_of < 0).sum())} rows of its virtual dataset map to no source")
    return Layout(files, file_of, row_of, offset, row_bytes)


def source_offsets(path: str, name: str, tail: tuple) -> np.ndarray | None:
    try:
        with h5py.File(path, "r") as f:
            ds = f[name]
            if ds.shape[1:] != tail:
                raise ImgshardError(f"{path}: {name} rows are {ds.shape[1:]}, the dataset's are {tail}")
            offsets = _file_offsets(ds)
            if offsets is not None and len(offsets) and os.path.getsize(path) < offsets.max() + int(np.prod(tail)):
                raise ImgshardError(f"{path}: truncated (its rows end past its {os.path.getsize(path)} bytes); rebuild the dataset (snakemake --cores N)")
            return offsets
    except FileNotFoundError:
        raise ImgshardError(f"{path}: part file of the virtual dataset is missing (it would read as zeros); rebuild the dataset") from None
    except OSError as e:
        if "truncated file" in str(e):
            raise ImgshardError(f"{path}: truncated (shorter than HDF5 wrote it); rebuild the dataset (snakemake --cores N)") from None
        raise ImgshardError(f"{path}: part file of the virtual dataset cannot be read ({e}); rebuild the dataset") from None


class Snapshot:
    """One dataset as it was when opened: its metadata, its layout, and per-process handles to read rows.

    Pickles as the snapshot's own name and identity, so a spawned process reopens exactly it.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._fd = _lock_shared(self.path)
        st = os.fstat(self._fd)
        self.identity = (st.st_dev, st.st_ino)
        try:
            self._load(h5py.File(os.fdopen(os.dup(self._fd), "rb"), "r"))
        except OSError as e:
            os.close(self._fd)
            raise ImgshardError(f"{self.path}: not an HDF5 file ({e})") from None
        except BaseException:
            os.close(self._fd)
            raise
        self._pid, self._fds, self._datasets = os.getpid(), None, {}

    def _load(self, f: h5py.File) -> None:
        with f:
            if IMAGES not in f:
                raise ImgshardError(f"{self.path}: not an imgshard dataset (it has no 'images')")
            images = f[IMAGES]
            self.shape = images.shape
            self.dtype = images.dtype
            self.virtual = images.is_virtual
            self.compression = None if self.virtual else images.compression
            self.dataset_dir = os.path.dirname(os.path.abspath(self.path))
            own = f.attrs.get(SNAPSHOT_ATTR)
            # A spawned process opens the snapshot by its own name: the dataset's name may mean a newer one by then.
            self.own_path = os.path.join(self.dataset_dir, own) if own else os.path.abspath(self.path)
            self.layout = read_layout(f, self.dataset_dir, self.own_path)
            self.target = next((t for t in (MASKS, LABELS) if t in f), None)
            self.classes = [str(c) for c in f[self.target].attrs.get(CLASSES_ATTR, [])] if self.target else []
            self.labels = f[LABELS][()] if self.target == LABELS else None
            self.target_shape = f[MASKS].shape[1:] if self.target == MASKS else ()
            self.attrs = {k: f.attrs[k] for k in f.attrs}
            self.config = json.loads(self.attrs.get(CONFIG_ATTR, "{}"))

    def __len__(self) -> int:
        return self.shape[0]

    # --- identity across processes -------------------------------------------------

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.update(_fd=None, _pid=None, _fds=None, _datasets={})
        return state

    def _descriptor(self) -> int:
        """This process's locked descriptor of the snapshot: inherited across fork, reopened after spawn."""
        if self._fd is not None:
            return self._fd
        fd = _lock_shared(self.own_path) if os.path.exists(self.own_path) else None
        if fd is None or (os.fstat(fd).st_dev, os.fstat(fd).st_ino) != self.identity:
            if fd is not None:
                os.close(fd)
            raise ImgshardError(f"{self.path}: the snapshot this reader opened ({self.own_path}) is gone; open the dataset again")
        self._fd = fd
        return fd

    def is_current(self) -> bool:
        """False once a newer snapshot has been published under the dataset's name."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return True  # nothing newer to go to
        return (st.st_dev, st.st_ino) == self.identity

    # --- reading -------------------------------------------------------------------

    def _this_process(self) -> None:
        """Handles are per process: a forked child opens its own (and never frees its parent's, whose
        HDF5 close would drop the lock they share)."""
        if self._pid != os.getpid():
            _INHERITED.append(self._datasets)
            self._pid, self._fds, self._datasets = os.getpid(), None, {}

    def fds(self) -> list[int]:
        """Descriptors of the files holding the rows, opened once per process."""
        self._this_process()
        if self._fds is None:
            own = self._descriptor()
            fds = []
            for path in self.layout.files:
                try:
                    # The snapshot itself through its locked descriptor: its name may mean a newer file by now.
                    fds.append(os.dup(own) if path == self.own_path else os.open(path, os.O_RDONLY))
                except FileNotFoundError:
                    for fd in fds:
                        os.close(fd)
                    raise ImgshardError(f"{path}: file of the dataset {self.path} is missing; rebuild the dataset") from None
            self._fds = fds
        return self._fds

    def dataset(self, file: int, name: str) -> h5py.Dataset:
        """``name`` of one file of the layout, through h5py (compressed rows, masks), opened once per process."""
        self._this_process()
        ds = self._datasets.get((file, name))
        if ds is None:
            path = self.layout.files[file]
            try:
                ds = (self.h5() if path == self.own_path else h5py.File(path, "r"))[name]
            except OSError as e:
                raise ImgshardError(f"{self.layout.files[file]}: cannot read {name} ({e}); rebuild the dataset") from None
            self._datasets[(file, name)] = ds
        return ds

    def read_images(self, rows: list[int], out: list[memoryview], out_array: np.ndarray) -> None:
        """Rows ``rows`` of ``images`` into ``out`` (one writable memoryview per row, backed by ``out_array``)."""
        layout = self.layout
        fds = self.fds()
        files = layout.file_of[rows].tolist()
        offsets = layout.offset[rows].tolist()
        size = layout.row_bytes
        preadv = os.preadv
        for j, (file, offset) in enumerate(zip(files, offsets)):
            if offset >= 0:
                if preadv(fds[file], (out[j],), offset) != size:
                    raise ImgshardError(f"{layout.files[file]}: truncated (a row at byte {offset} ends past the end); rebuild the dataset")
            else:
                self.dataset(file, IMAGES).read_direct(out_array, np.s_[layout.row_of[rows[j]]], np.s_[j])

    def read_masks(self, rows: list[int], out: np.ndarray) -> None:
        layout = self.layout
        if self.virtual:
            for j, i in enumerate(rows):
                self.dataset(int(layout.file_of[i]), MASKS).read_direct(out, np.s_[layout.row_of[i]], np.s_[j])
        else:
            ds = self.dataset(0, MASKS)
            for j, i in enumerate(rows):
                ds.read_direct(out, np.s_[i], np.s_[j])

    def h5(self) -> h5py.File:
        """The snapshot's file through h5py, for what it lists (not for its rows: see read_images)."""
        fd = self._descriptor()
        try:
            st = os.stat(self.own_path)
            if (st.st_dev, st.st_ino) == self.identity:
                return h5py.File(self.own_path, "r")
        except FileNotFoundError:
            pass
        # A dataset of an older imgshard, replaced since: only the open descriptor still reaches it.
        return h5py.File(os.fdopen(os.dup(fd), "rb"), "r")

    def paths(self) -> list[str]:
        with self.h5() as f:
            return list(f[PATHS].asstr()[()])

    def close(self) -> None:
        if self._pid == os.getpid():
            for fd in self._fds or []:
                os.close(fd)
            for ds in self._datasets.values():
                ds.file.close()
        self._fds, self._datasets = None, {}
        if self._fd is not None:
            os.close(self._fd)  # releases this process's share of the lock
            self._fd = None
