"""Step 7, read: the dataset in a training loop, with or without PyTorch.

    from imgshard import H5ImageDataset
    loader = torch.utils.data.DataLoader(H5ImageDataset("results/dataset.h5"), batch_size=16, num_workers=4)

Nothing here imports torch: a map-style dataset only needs ``__len__`` and
``__getitem__``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import h5py
import numpy as np

from .errors import ImgshardError
from .write import IMAGES, PATHS

TARGETS = ("masks", "labels")


def check_sources(f: h5py.File, path: str) -> None:
    """Refuse a virtual dataset whose shard files are missing: HDF5 would read them as zeros."""
    images = f[IMAGES]
    if not images.is_virtual:
        return
    folder = os.path.dirname(os.path.abspath(path))
    for source in {s.file_name for s in images.virtual_sources()}:
        if not os.path.isfile(os.path.join(folder, source)):
            raise ImgshardError(f"{path}: shard file {source!r} of its virtual dataset is missing (it would read as zeros)")


class H5ImageDataset:
    """The images of an imgshard dataset, one ``(H, W, 3)`` uint8 RGB array per index.

    With masks or labels in the file, an item is ``(image, target)``: the mask
    ``(H, W, K)`` uint8 of 0/1, or the label as an int. ``transform`` gets the
    item and returns what the loader should see.

    The HDF5 file is opened lazily in each process that reads, because an h5py
    handle opened before a fork is shared with the child and breaks. So the
    dataset works in a DataLoader with ``num_workers > 0`` under fork and spawn.
    """

    def __init__(self, path: str | os.PathLike, transform: Callable | None = None):
        self.path = os.fspath(path)
        self.transform = transform
        with h5py.File(self.path, "r") as f:
            check_sources(f, self.path)
            self._len = f[IMAGES].shape[0]
            self.image_shape = f[IMAGES].shape[1:]
            self.target = next((t for t in TARGETS if t in f), None)
            self.classes = list(f[self.target].attrs.get("classes", [])) if self.target else []
        self._file: h5py.File | None = None
        self._pid: int | None = None

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int):
        if index < 0:
            index += self._len
        if not 0 <= index < self._len:
            raise IndexError(f"index {index} out of range for {self._len} images")
        f = self._open()
        item = f[IMAGES][index]
        if self.target:
            target = f[self.target][index]
            item = (item, int(target) if self.target == "labels" else target)
        return self.transform(item) if self.transform else item

    def path_of(self, index: int) -> str:
        return self._open()[PATHS].asstr()[index]

    def _open(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None

    def __getstate__(self) -> dict:
        # spawn pickles the dataset into each worker: send the path, not the handle.
        state = self.__dict__.copy()
        state["_file"] = state["_pid"] = None
        return state


def batches(
    path: str | os.PathLike, batch_size: int, shuffle: bool = False, seed: int = 0, drop_last: bool = False
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Yield ``(images, targets)`` batches as NumPy arrays, for frameworks other than PyTorch.

    Images are read with ``read_direct`` into one buffer that is reused: copy a
    batch if you keep it past the next one. ``targets`` is None when the file
    has no masks or labels. The last batch may be shorter unless ``drop_last``.
    """
    path = os.fspath(path)
    with h5py.File(path, "r") as f:
        check_sources(f, path)
        images = f[IMAGES]
        n = images.shape[0]
        target = next((f[t] for t in TARGETS if t in f), None)
        order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
        buf = np.empty((batch_size, *images.shape[1:]), np.uint8)
        tbuf = np.empty((batch_size, *target.shape[1:]), target.dtype) if target is not None else None
        for start in range(0, n, batch_size):
            chosen = order[start : start + batch_size]
            if len(chosen) < batch_size and drop_last:
                return
            m = len(chosen)
            if shuffle:
                for j, i in enumerate(chosen):
                    images.read_direct(buf, np.s_[i : i + 1], np.s_[j : j + 1])
                    if target is not None:
                        target.read_direct(tbuf, np.s_[i : i + 1], np.s_[j : j + 1])
            else:  # consecutive images: one read for the whole batch
                images.read_direct(buf, np.s_[start : start + m], np.s_[0:m])
                if target is not None:
                    target.read_direct(tbuf, np.s_[start : start + m], np.s_[0:m])
            yield buf[:m], (tbuf[:m] if tbuf is not None else None)
