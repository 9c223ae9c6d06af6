"""The read stage: a built dataset in a training loop. Imports only the package's base (format, errors, shm).

- ``Loader`` (loader.py): the fast path, batches of NumPy arrays read at the
  rows' byte offsets by threads, shuffled per epoch, split over DDP ranks,
  resumable mid-epoch;
- ``H5ImageDataset`` and ``collate`` (dataset.py): for torch's DataLoader;
- ``batches`` (loader.py): one epoch of a Loader, for other frameworks;
- ``BlockSampler`` (block_sampler.py): the block order for torch's DataLoader;
- snapshot.py: the snapshot a reader holds, and where its rows' bytes are;
  order.py: the orders an epoch can take (stored, full shuffle, blocks) and
  each rank's part of it (sampler.py: the permutation and DistributedSampler's
  rule); blocks.py: reading in block order by whole blocks.
"""

from .block_sampler import BlockSampler
from .dataset import H5ImageDataset, collate
from .loader import Loader, batches
from .snapshot import Snapshot

__all__ = ["BlockSampler", "H5ImageDataset", "Loader", "Snapshot", "batches", "collate"]
