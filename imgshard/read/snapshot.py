"""Read: one snapshot of a dataset, held for as long as a reader reads it, and where each row's bytes are.

Opening ``results/train.h5`` takes a shared ``flock`` on the file it names
now (a snapshot: see imgshard/publish/snapshots.py), so no later run removes that
snapshot or the part files it maps while this reader holds it. Every process
that reads (a DataLoader's workers too) reads that same snapshot: a forked
one through the inherited descriptor, a spawned one by the snapshot's own
name. A newer snapshot is picked up only by opening again (``refresh``).

The layout of each stored dataset (images, and masks' bits) is read once, at
open, into a table of where each row's bytes lie: its file, its byte offset
there and its stored size, and whether those bytes are the row itself
(stored plainly) or one compressed chunk (codecs.py). A batch is then plain
``preadv`` calls: a plain row straight into the buffer the caller owns, a
compressed one into this thread's buffer and decoded from there into its
place, the GIL released for both. No HDF5 on the hot path, so reader threads
and workers scale; only rows stored through a filter codecs.py does not know
go through h5py. Masks are unpacked from their bits as they are read.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import h5py
import numpy as np

from ..errors import ImgshardError
from ..codecs import decoder_of, filters_of, name_of, unpack_masks
from ..format import CLASSES_ATTR, CONFIG_ATTR, IMAGES, LABELS, MASK_BITS, MASK_SHAPE_ATTR, MASKS, PATHS, SNAPSHOT_ATTR

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
    """Where each row of one stored dataset lies: ``files[file_of[i]]`` at byte ``offset[i]``, ``size[i]``
    bytes, to be decoded by ``decoders[file_of[i]]`` when ``coded[i]`` (one compressed chunk), else the
    row itself. Offset -1: read it through h5py, at row ``row_of[i]`` of that file's dataset."""

    files: list[str]  # absolute; shared by every layout of a snapshot
    file_of: np.ndarray  # int32
    row_of: np.ndarray  # int64
    offset: np.ndarray  # int64
    size: np.ndarray  # int64
    coded: np.ndarray  # bool
    decoders: dict[int, Callable]  # by file, where its rows are compressed
    row_bytes: int  # of a row as delivered

    def __post_init__(self):
        self.plain = bool(len(self.offset) == 0 or (self.offset.min() >= 0 and not self.coded.any()))

    def spans(self, blocks: list[tuple[int, int]]) -> list[tuple[int, int, int] | None]:
        """(file, offset, bytes) of each block of rows (first, count) stored back to back; None for one that
        is not (or is read through h5py). Computed for all blocks at once: a reader asks per block."""
        n = len(self.offset)
        if not blocks or not n:
            return [None] * len(blocks)
        first = np.asarray([b[0] for b in blocks], np.int64)
        last = first + np.asarray([b[1] for b in blocks], np.int64) - 1
        end = self.offset + self.size
        joined = (self.offset[1:] == end[:-1]) & (self.file_of[1:] == self.file_of[:-1]) & (self.offset[1:] >= 0)
        breaks = np.concatenate([[0], np.cumsum(~joined)])  # breaks[i]: joints that fail among rows 0..i
        whole = (breaks[last] == breaks[first]) & (self.offset[first] >= 0)
        files, starts, sizes = self.file_of[first].tolist(), self.offset[first].tolist(), (end[last] - self.offset[first]).tolist()
        return [(f, o, z) if ok else None for f, o, z, ok in zip(files, starts, sizes, whole.tolist())]


@dataclass
class _Stored:
    """One file's rows of one dataset: byte offset, stored size, and whether through its filter, per row."""

    offset: np.ndarray
    size: np.ndarray
    coded: np.ndarray
    decode: Callable | None


def _file_rows(ds: h5py.Dataset) -> _Stored | None:
    """Where each row of ``ds`` lies in its file; None when its rows are not one piece each that this
    reader can decode (chunked otherwise, or through filters codecs.py does not know)."""
    rows = ds.shape[0]
    row_bytes = int(np.prod(ds.shape[1:])) * ds.dtype.itemsize
    if ds.chunks is None:
        base = ds.id.get_offset()
        if base is None:  # never written: no storage
            return None if rows else _Stored(*(np.zeros(0, t) for t in (np.int64, np.int64, bool)), None)
        return _Stored(base + np.arange(rows, dtype=np.int64) * row_bytes, np.full(rows, row_bytes, np.int64), np.zeros(rows, bool), None)
    filtered = bool(filters_of(ds))
    decode = decoder_of(ds) if filtered else None
    if (filtered and decode is None) or ds.chunks != (1, *ds.shape[1:]) or ds.id.get_num_chunks() != rows:
        return None
    offset, size, coded = np.empty(rows, np.int64), np.empty(rows, np.int64), np.zeros(rows, bool)

    def note(info):
        r = info.chunk_offset[0]
        offset[r], size[r] = info.byte_offset, info.size
        # A filter marked optional (lzf, gzip) stores a chunk it cannot shrink as it is, and says so here.
        coded[r] = decode is not None and info.filter_mask == 0

    ds.id.chunk_iter(note)
    return _Stored(offset, size, coded, decode)


def read_layout(f: h5py.File, name: str, dataset_dir: str, own_path: str, files: list[str]) -> Layout:
    """The layout of ``f[name]``; virtual sources resolve against ``dataset_dir``, the folder of the
    dataset as opened. ``files`` is the snapshot's list of files, which this extends."""
    ds = f[name]
    n = ds.shape[0]
    row_bytes = int(np.prod(ds.shape[1:]))
    file_of = np.full(n, -1, np.int32)
    row_of = np.arange(n, dtype=np.int64)
    offset, size, coded = np.full(n, -1, np.int64), np.zeros(n, np.int64), np.zeros(n, bool)
    decoders: dict[int, Callable] = {}

    numbers = {p: k for k, p in enumerate(files)}

    def number(path: str) -> int:
        if path not in numbers:
            numbers[path] = len(files)
            files.append(path)
        return numbers[path]

    if not ds.is_virtual:
        k = number(own_path)
        file_of[:] = k
        stored = _file_rows(ds)
        if stored is not None:
            offset, size, coded = stored.offset, stored.size, stored.coded
            if stored.decode is not None:
                decoders[k] = stored.decode
        return Layout(files, file_of, row_of, offset, size, coded, decoders, row_bytes)
    stored_of: dict[str, _Stored | None] = {}
    for vs in ds.virtual_sources():
        path = os.path.normpath(os.path.join(dataset_dir, vs.file_name))
        (d0, *_), (d1, *_) = vs.vspace.get_select_bounds()
        count = d1 - d0 + 1
        s0 = 0 if vs.src_space.get_select_type() == h5py.h5s.SEL_ALL else vs.src_space.get_select_bounds()[0][0]
        k = number(path)
        if path not in stored_of:
            stored_of[path] = source_rows(path, vs.dset_name, ds.shape[1:])
            if stored_of[path] is not None and stored_of[path].decode is not None:
                decoders[k] = stored_of[path].decode
        file_of[d0 : d1 + 1] = k
        row_of[d0 : d1 + 1] = np.arange(s0, s0 + count)
        stored = stored_of[path]
        if stored is not None:
            offset[d0 : d1 + 1] = stored.offset[s0 : s0 + count]
            size[d0 : d1 + 1] = stored.size[s0 : s0 + count]
            coded[d0 : d1 + 1] = stored.coded[s0 : s0 + count]
    if (file_of < 0).any():
        raise ImgshardError(f"{own_path}: {int((file_of < 0).sum())} rows of its virtual dataset {name} map to no source")
    return Layout(files, file_of, row_of, offset, size, coded, decoders, row_bytes)


def source_rows(path: str, name: str, tail: tuple) -> _Stored | None:
    """Where the rows of ``name`` lie in the part file ``path``; ImgshardError naming it when it is
    missing, damaged, or its rows are not of shape ``tail``."""
    try:
        with h5py.File(path, "r") as f:
            ds = f[name]
            if ds.shape[1:] != tail:
                raise ImgshardError(f"{path}: {name} rows are {ds.shape[1:]}, the dataset's are {tail}")
            stored = _file_rows(ds)
            if stored is not None and len(stored.offset) and os.path.getsize(path) < int((stored.offset + stored.size).max()):
                raise ImgshardError(f"{path}: truncated (its rows end past its {os.path.getsize(path)} bytes); rebuild the dataset (snakemake --cores N)")
            return stored
    except FileNotFoundError:
        raise ImgshardError(f"{path}: part file of the virtual dataset is missing (it would read as zeros); rebuild the dataset") from None
    except KeyError:
        raise ImgshardError(f"{path}: part file of the virtual dataset has no {name}; rebuild the dataset") from None
    except OSError as e:
        if "truncated file" in str(e):
            raise ImgshardError(f"{path}: truncated (shorter than HDF5 wrote it); rebuild the dataset (snakemake --cores N)") from None
        raise ImgshardError(f"{path}: part file of the virtual dataset cannot be read ({e}); rebuild the dataset") from None


def stored_compression(f: h5py.File, dataset_dir: str) -> str | None:
    """The ``compression`` the images of ``f`` are stored with (a virtual dataset's: its first part's);
    None when that part cannot be read (readers name the part that is missing)."""
    images = f[IMAGES]
    if not images.is_virtual:
        return name_of(images)
    sources = images.virtual_sources()
    if not sources:
        return "none"
    try:
        with h5py.File(os.path.join(dataset_dir, sources[0].file_name), "r") as part:
            return name_of(part[sources[0].dset_name])
    except (OSError, KeyError):
        return None


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
            self.dataset_dir = os.path.dirname(os.path.abspath(self.path))
            own = f.attrs.get(SNAPSHOT_ATTR)
            # A spawned process opens the snapshot by its own name: the dataset's name may mean a newer one by then.
            self.own_path = os.path.join(self.dataset_dir, own) if own else os.path.abspath(self.path)
            self.files: list[str] = []
            self.layout = read_layout(f, IMAGES, self.dataset_dir, self.own_path, self.files)
            # Masks as stored: their bits (format 3), or the masks themselves (format 2).
            self.masks_name = next((m for m in (MASK_BITS, MASKS) if m in f), None)
            self.target = MASKS if self.masks_name else LABELS if LABELS in f else None
            stored = f[self.masks_name or LABELS] if self.target else None
            self.classes = [str(c) for c in stored.attrs.get(CLASSES_ATTR, [])] if self.target else []
            self.labels = f[LABELS][()] if self.target == LABELS else None
            self.target_shape = ()
            self.masks_layout = None
            if self.masks_name:
                self.target_shape = tuple(int(x) for x in stored.attrs[MASK_SHAPE_ATTR]) if self.masks_name == MASK_BITS else stored.shape[1:]
                self.masks_layout = read_layout(f, self.masks_name, self.dataset_dir, self.own_path, self.files)
            self.attrs = {k: f.attrs[k] for k in f.attrs}
            self.config = json.loads(self.attrs.get(CONFIG_ATTR, "{}"))

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def compression(self) -> str | None:
        """The ``compression`` its images are stored with; asked of the file when wanted, not at open."""
        with self.h5() as f:
            return stored_compression(f, self.dataset_dir)

    # --- identity across processes -------------------------------------------------

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.update(_fd=None, _pid=None, _fds=None, _datasets={})
        state.pop("_local", None)
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
            for path in self.files:
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
        """``name`` of one file of the snapshot through h5py (rows stored through an unknown filter), opened once per process."""
        self._this_process()
        ds = self._datasets.get((file, name))
        if ds is None:
            path = self.files[file]
            try:
                ds = (self.h5() if path == self.own_path else h5py.File(path, "r"))[name]
            except OSError as e:
                raise ImgshardError(f"{path}: cannot read {name} ({e}); rebuild the dataset") from None
            self._datasets[(file, name)] = ds
        return ds

    @property
    def layouts(self) -> list[Layout]:
        """The layouts of what a batch reads: its images, and their masks."""
        return [self.layout] + ([self.masks_layout] if self.masks_layout is not None else [])

    def block_reads(self, blocks: list[tuple[int, int]]) -> list[tuple[tuple[int, int, int], ...]]:
        """For each block of rows (first, count), the byte ranges (file, offset, bytes) that hold it whole, one
        per stored dataset (images, and masks' bits) whose rows of the block lie back to back."""
        spans = zip(*(layout.spans(blocks) for layout in self.layouts))
        return [tuple(s for s in block if s is not None) for block in spans]

    def read_images(self, rows: list[int], out: list[memoryview], out_array: np.ndarray) -> None:
        """Rows ``rows`` of ``images`` into ``out`` (one writable memoryview per row, backed by ``out_array``)."""
        self._read(self.layout, IMAGES, rows, out, out_array)

    def read_masks(self, rows: list[int], out: np.ndarray) -> None:
        """The masks of rows ``rows`` into ``out`` (len(rows), H, W, K), unpacked from their stored bits."""
        m = len(rows)
        if self.masks_name == MASKS:  # format 2: stored as they are delivered
            self._read(self.masks_layout, MASKS, rows, [memoryview(out[j]).cast("B") for j in range(m)], out)
            return
        bits = self._scratch("bits", (m, self.masks_layout.row_bytes))
        self._read(self.masks_layout, MASK_BITS, rows, [memoryview(bits[j]) for j in range(m)], bits)
        for j in range(m):
            unpack_masks(bits[j], out[j])

    def _read(self, layout: Layout, name: str, rows: list[int], out: list[memoryview], out_array: np.ndarray) -> None:
        """Rows of the stored dataset ``name`` into ``out``: a plain row with one ``preadv`` straight into its
        place, a compressed one read into this thread's buffer and decoded from there into its place."""
        fds = self.fds()
        files = layout.file_of[rows].tolist()
        offsets = layout.offset[rows].tolist()
        preadv = os.preadv
        if layout.plain:  # every row stored as it is, at an offset: the loop the uncompressed feed runs
            size = layout.row_bytes
            for j, (file, offset) in enumerate(zip(files, offsets)):
                if preadv(fds[file], (out[j],), offset) != size:
                    raise ImgshardError(f"{self.files[file]}: truncated (a row of {name} at byte {offset} ends past the end); rebuild the dataset")
            return
        sizes = layout.size[rows].tolist()
        coded = layout.coded[rows].tolist()
        for j, (file, offset, size, code) in enumerate(zip(files, offsets, sizes, coded)):
            if offset < 0:
                self.dataset(file, name).read_direct(out_array, np.s_[layout.row_of[rows[j]]], np.s_[j])
                continue
            target = self._scratch("chunk", (max(size, layout.row_bytes),)).data[:size] if code else out[j]
            if preadv(fds[file], (target,), offset) != size:
                raise ImgshardError(f"{self.files[file]}: truncated (a row of {name} at byte {offset} ends past the end); rebuild the dataset")
            if code:
                try:
                    # A stored row that decodes short fills only part of its place: count what it gave.
                    done, why = layout.decoders[file](target, out=out[j]).nbytes, None
                except Exception as e:  # the codec's own error says little: name the file and row
                    done, why = 0, e
                if done != layout.row_bytes:
                    why = why or f"{done} bytes of its {layout.row_bytes}"
                    raise ImgshardError(f"{self.files[file]}: row {layout.row_of[rows[j]]} of {name} does not decode ({why}); rebuild the dataset")

    def _scratch(self, what: str, shape: tuple) -> np.ndarray:
        """A buffer of this thread's, at least ``shape``, reused from call to call."""
        local = self.__dict__.setdefault("_local", threading.local())
        buf = getattr(local, what, None)
        if buf is None or buf.shape[1:] != shape[1:] or buf.shape[0] < shape[0]:
            buf = np.empty(shape, np.uint8)
            setattr(local, what, buf)
        return buf[: shape[0]]

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
