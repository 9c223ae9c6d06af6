"""Read: ``H5ImageDataset``, for PyTorch's own ``DataLoader`` with its workers and transforms.

    from imgshard import H5ImageDataset, collate
    ds = H5ImageDataset("results/train.h5")
    loader = DataLoader(ds, batch_size=64, shuffle=True, num_workers=2, collate_fn=collate)
    for images, targets in loader:   # (64, H, W, 3) uint8 tensors; masks, labels or None

A DataLoader with a batch size hands each worker a batch of indices, which
``__getitems__`` reads at once, at the rows' offsets, into a slot of the
worker's ring of shared-memory batch buffers (ring.py): the worker's only
copy of the pixels, which the main process then sees without another.
``collate`` passes such a batch on as it is; the default collate also works,
stacking the items again (one more copy, in a fresh tensor).

Nothing here imports torch until a batch is read: a map-style dataset only
needs ``__len__`` and ``__getitem__``. The dataset reads the snapshot it
opened (read/snapshot.py) in every worker, under fork or spawn.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable

import numpy as np

from ..format import LABELS, MASKS
from .ring import FREE, Ring, Shipped
from .snapshot import Snapshot


class H5ImageDataset:
    """The images of an imgshard dataset, one ``(H, W, 3)`` uint8 RGB array per index.

    With masks or labels in the file, an item is ``(image, target)``: the mask
    ``(H, W, K)`` uint8 of 0/1, or the label as an int. ``transform`` gets the
    item and returns what the loader should see.
    """

    def __init__(self, path: str | os.PathLike, transform: Callable | None = None):
        self.path = os.fspath(path)
        self.transform = transform
        self.snapshot = Snapshot(self.path)
        self.image_shape = self.snapshot.shape[1:]
        self.target = self.snapshot.target
        self.classes = self.snapshot.classes
        self._paths: list[str] | None = None
        self._rings: dict[int, Ring] = {}  # by worker process

    def __len__(self) -> int:
        return len(self.snapshot)

    def _index(self, index: int) -> int:
        n = len(self.snapshot)
        if index < 0:
            index += n
        if not 0 <= index < n:
            raise IndexError(f"index {index} out of range for {n} images")
        return int(index)

    def __getitem__(self, index: int):
        i = self._index(index)
        image = np.empty(self.image_shape, self.snapshot.dtype)
        self.snapshot.read_images([i], [memoryview(image).cast("B")], image[None])
        item = image
        if self.target == MASKS:
            masks = np.empty((1, *self.snapshot.target_shape), np.uint8)
            self.snapshot.read_masks([i], masks)
            item = (image, masks[0])
        elif self.target == LABELS:
            item = (image, int(self.snapshot.labels[i]))
        return self.transform(item) if self.transform else item

    def __getitems__(self, indices: list[int]):
        """A batch of items read at once (see the module's docstring)."""
        if self.transform is not None:
            return [self[i] for i in indices]
        rows = [self._index(i) for i in indices]
        m = len(rows)
        ring = self._ring(m)
        slot = ring.acquire() if ring is not None else None
        tensors = None
        if slot is not None:
            images = ring.images[slot, :m]
            targets = ring.targets[slot, :m] if ring.targets is not None else None
        else:  # outside a worker, or every slot still held by the main process: tensors of their own
            import torch

            def new(shape, dtype):
                tensor = torch.empty(shape, dtype=dtype)
                return tensor.share_memory_() if ring is not None else tensor

            tensors = [new((m, *self.image_shape), torch.uint8), None]
            if self.target == MASKS:
                tensors[1] = new((m, *self.snapshot.target_shape), torch.uint8)
            elif self.target == LABELS:
                tensors[1] = torch.empty(m, dtype=torch.int64)
            images, targets = (t.numpy() if t is not None else None for t in tensors)
        self.snapshot.read_images(rows, [memoryview(images[j]).cast("B") for j in range(m)], images)
        if self.target == MASKS:
            self.snapshot.read_masks(rows, targets)
        elif self.target == LABELS:
            np.take(self.snapshot.labels, rows, out=targets)
        return Batch(images, targets, ring, slot, tensors)

    def _ring(self, m: int) -> Ring | None:
        """This DataLoader worker's ring of batch buffers (see ring.py); None outside a worker."""
        from torch.utils.data import get_worker_info

        if get_worker_info() is None:
            return None
        ring = self._rings.get(os.getpid())
        if ring is None or ring.images.shape[1] < m:
            shape = self.snapshot.target_shape if self.target == MASKS else () if self.target == LABELS else None
            dtype = np.int64 if self.target == LABELS else np.uint8
            ring = self._rings[os.getpid()] = Ring(m, self.image_shape, shape, dtype)
        return ring

    def path_of(self, index: int) -> str:
        if self._paths is None:
            self._paths = self.snapshot.paths()
        return self._paths[self._index(index)]

    def refresh(self) -> bool:
        """Move to the newest snapshot of the dataset, if one was published since it was opened; True if it did.

        Between epochs, before the DataLoader's workers start (or with
        ``persistent_workers=False``): each worker reads the snapshot it was given.
        """
        if self.snapshot.is_current():
            return False
        old, self.snapshot = self.snapshot, Snapshot(self.path)
        old.close()
        self.image_shape, self.target, self.classes = self.snapshot.shape[1:], self.snapshot.target, self.snapshot.classes
        self._paths = None
        return True

    def close(self) -> None:
        self.snapshot.close()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_rings"] = {}  # a worker makes its own
        return state


class Batch(list):
    """What ``__getitems__`` returns: a list of items, as the default collate wants, that also carries
    the batch as read (``images``, ``targets``), which ``collate`` passes on without a copy."""

    def __init__(self, images: np.ndarray, targets: np.ndarray | None, ring: Ring | None, slot: int | None, tensors: list | None):
        super().__init__(images if targets is None else zip(images, targets.tolist() if targets.ndim == 1 else targets))
        self.images, self.targets, self.ring, self.slot, self.tensors = images, targets, ring, slot, tensors
        if ring is not None and slot is not None:
            # Not shipped by collate (the default collate copied the items): the slot is free again.
            self._free = weakref.finalize(self, ring.flags.__setitem__, slot, FREE)

    def ship(self):
        """The batch as ``collate`` hands it on: the slot itself from a worker's ring, else its tensors."""
        if self.slot is not None:
            self._free.detach()  # from now on the main process frees it
            return Shipped(self.ring, self.slot, len(self.images), self.targets is not None, self.targets is not None and self.targets.ndim == 1)
        return tuple(self.tensors)


def collate(batch):
    """A DataLoader's ``collate_fn`` for ``H5ImageDataset``: its batch as read, ``(images, targets)``
    tensors (targets None without labels or masks); anything else through torch's default collate."""
    if isinstance(batch, Batch):
        return batch.ship()
    from torch.utils.data import default_collate

    return default_collate(batch)
