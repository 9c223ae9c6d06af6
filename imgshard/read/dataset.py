"""Step 7, read: ``H5ImageDataset``, for PyTorch's own ``DataLoader`` with its workers and transforms.

    from imgshard import H5ImageDataset, collate
    ds = H5ImageDataset("results/train.h5")
    loader = DataLoader(ds, batch_size=64, shuffle=True, num_workers=2, collate_fn=collate)
    for images, targets in loader:   # (64, H, W, 3) uint8 tensors; masks, labels or None

A DataLoader with a batch size hands each worker a batch of indices, which
``__getitems__`` reads at once, at the rows' offsets, into one tensor in
shared memory: the worker's only copy of the pixels, which then reaches the
main process without another. ``collate`` passes such a batch on as it is;
the default collate also works, stacking the items again (one more copy).

Nothing here imports torch until a batch is read: a map-style dataset only
needs ``__len__`` and ``__getitem__``. The dataset reads the snapshot it
opened (read/snapshot.py) in every worker, under fork or spawn.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from ..index import LABELS, MASKS
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
        """A batch of items read at once into one shared-memory tensor (see the module's docstring)."""
        if self.transform is not None:
            return [self[i] for i in indices]
        import torch

        rows = [self._index(i) for i in indices]
        m = len(rows)
        images = torch.empty((m, *self.image_shape), dtype=torch.uint8).share_memory_()
        out = images.numpy()
        self.snapshot.read_images(rows, [memoryview(out[j]).cast("B") for j in range(m)], out)
        targets = None
        if self.target == MASKS:
            targets = torch.empty((m, *self.snapshot.target_shape), dtype=torch.uint8).share_memory_()
            self.snapshot.read_masks(rows, targets.numpy())
        elif self.target == LABELS:
            targets = torch.from_numpy(self.snapshot.labels[rows])
        return Batch(images, targets)

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


class Batch(list):
    """What ``__getitems__`` returns: a list of items, as the default collate wants, that also
    carries the batch as read (``images``, ``targets``), which ``collate`` passes on without a copy."""

    def __init__(self, images, targets):
        if targets is None:
            super().__init__(images)
        else:
            super().__init__(zip(images, targets.tolist() if targets.ndim == 1 else targets))
        self.images, self.targets = images, targets


def collate(batch):
    """A DataLoader's ``collate_fn`` for ``H5ImageDataset``: its batch as read, ``(images, targets)``
    (targets None without labels or masks); anything else through torch's default collate."""
    if isinstance(batch, Batch):
        return batch.images, batch.targets
    from torch.utils.data import default_collate

    return default_collate(batch)
