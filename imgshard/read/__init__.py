"""Step 7, read: a built dataset in a training loop.

- ``Loader`` (loader.py): the fast path, batches of NumPy arrays read at the
  rows' byte offsets by threads, shuffled per epoch, split over DDP ranks,
  resumable mid-epoch;
- ``H5ImageDataset`` and ``collate`` (dataset.py): for torch's DataLoader;
- ``batches`` (loader.py): one epoch of a Loader, for other frameworks;
- snapshot.py: the snapshot a reader holds, and where its rows' bytes are;
  sampler.py: the order of an epoch and each rank's part of it.
"""

from .dataset import H5ImageDataset, collate
from .loader import Loader, batches
from .snapshot import Snapshot

__all__ = ["H5ImageDataset", "Loader", "Snapshot", "batches", "collate"]
