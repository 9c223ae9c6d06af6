"""``BlockSampler``: the block order (order.py) for torch's ``DataLoader``, with ranks as DistributedSampler has them.

    from imgshard import BlockSampler, H5ImageDataset, collate
    ds = H5ImageDataset("results/train.h5")
    sampler = BlockSampler(ds, batch_size=64, seed=0, rank=rank, world_size=world_size)
    loader = DataLoader(ds, batch_size=64, sampler=sampler, num_workers=2, collate_fn=collate)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for images, targets in loader: ...

It yields this rank's indices of the epoch in block order, each row once,
the same batches the ``Loader`` reads with ``shuffle="block"``. The
DataLoader's workers read rows one by one; so that the disk still sees
large reads, the sampler asks the kernel to read each block whole
(``posix_fadvise(WILLNEED)``) as the indices that first need it are handed
out, ``ahead_batches`` batches before: the kernel's page cache holds the
blocks then, not this process. Nothing here imports torch.
"""

from __future__ import annotations

import os

import numpy as np

from . import sampler
from .order import Blocks, blocks_of


class BlockSampler:
    def __init__(
        self,
        dataset,
        batch_size: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        block_bytes: int = 4 << 20,
        ahead_batches: int = 16,
    ):
        sampler.check(batch_size, rank, world_size)
        self.snapshot = dataset.snapshot
        self.batch_size, self.seed, self.rank, self.world_size, self.drop_last = batch_size, seed, rank, world_size, drop_last
        self.ahead = ahead_batches * batch_size
        self.blocks = blocks_of(self.snapshot.layout, block_bytes)
        self.reads = self.snapshot.block_reads(self.blocks)  # per block, each stored dataset's byte range
        self.order = Blocks(self.blocks, batch_size)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self) -> np.ndarray:
        """This rank's indices of the epoch, in the order they are handed out."""
        return self.order.part(self.seed, self.epoch, self.rank, self.world_size, self.drop_last)

    def __len__(self) -> int:
        n = self.order.n
        return n // self.world_size if self.drop_last else -(-n // self.world_size)

    def __iter__(self):
        rows = self.indices()
        block_of = self.order.block_of[rows]
        # Where each block is first needed: its read is asked for ``ahead`` indices before.
        first = {}
        for k, b in enumerate(block_of.tolist()):
            first.setdefault(b, k)
        firsts = sorted(first.items(), key=lambda item: item[1])
        fds: dict[int, int] = {}
        hinted = 0
        try:
            for k, row in enumerate(rows.tolist()):
                while hinted < len(firsts) and firsts[hinted][1] <= k + self.ahead:
                    self._will_need(firsts[hinted][0], fds)
                    hinted += 1
                yield row
        finally:
            for fd in fds.values():
                os.close(fd)

    def _will_need(self, block: int, fds: dict[int, int]) -> None:
        for file, offset, size in self.reads[block]:  # the images' block, and their masks' (none through h5py)
            if file not in fds:
                try:
                    fds[file] = os.open(self.snapshot.files[file], os.O_RDONLY)
                except OSError:
                    return  # a hint only: the read names what is missing
            os.posix_fadvise(fds[file], offset, size, os.POSIX_FADV_WILLNEED)
