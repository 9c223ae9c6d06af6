"""One reader of a built dataset, timed over a shuffled epoch in a process of its own; prints JSON.

    python -m benchmarks.readers READER DATASET [--batch 64] [--workers 2] [--cold] [--shuffle true|false|block]

Every reader first reads one epoch to warm the page cache (and start its
workers), then is timed over whole epochs until a second has passed:
images/s of a steady state. With --cold, the dataset's files are dropped
from the page cache (``posix_fadvise(DONTNEED)``) before one timed epoch. The caller's loop
takes each batch and does nothing with it, as a training step would hand it
on.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time

import h5py
import numpy as np

SEED = 0


def drop_cache(paths: list[str]) -> None:
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def files_of(dataset: str) -> list[str]:
    from imgshard.read import Snapshot

    snapshot = Snapshot(dataset)
    try:
        return list(snapshot.layout.files)
    finally:
        snapshot.close()


def limit(dataset: str, args) -> callable:
    """The limit: one process, ``read_direct_chunk`` of each row's chunk, shuffled, into one buffer."""
    f = h5py.File(dataset, "r")
    images = f["images"]
    n = images.shape[0]
    buffer = np.empty((args.batch, int(np.prod(images.shape[1:]))), np.uint8)

    def epoch(e: int) -> int:
        order = np.random.default_rng([SEED, e]).permutation(n).tolist()
        for j, i in enumerate(order):
            images.id.read_direct_chunk((i, 0, 0, 0), out=buffer[j % args.batch])
        return n

    return epoch


def pread_limit(dataset: str, args) -> callable:
    """The bytes on this layout: one thread, one ``preadv`` per row at its offset, shuffled, into one buffer."""
    from imgshard.read import Snapshot

    snapshot = Snapshot(dataset)
    layout = snapshot.layout
    fds = snapshot.fds()
    buffer = np.empty((args.batch, layout.row_bytes), np.uint8)
    views = [memoryview(row) for row in buffer]
    n = len(snapshot)

    def epoch(e: int) -> int:
        order = np.random.default_rng([SEED, e]).permutation(n)
        files, offsets = layout.file_of[order].tolist(), layout.offset[order].tolist()
        for j, (file, offset) in enumerate(zip(files, offsets)):
            os.preadv(fds[file], (views[j % args.batch],), offset)
        return n

    return epoch


def decode_limit(dataset: str, args) -> callable:
    """The limit of reading rows as stored, compressed or not: ``--threads`` threads, each taking whole
    batches of a shuffled epoch, each row's stored bytes read with one ``preadv`` at the offset known at
    open and decoded by its codec (imagecodecs, as the Loader does) into the thread's batch buffer."""
    from concurrent.futures import ThreadPoolExecutor

    from imgshard.read import Snapshot

    snapshot = Snapshot(dataset)
    layout, fds = snapshot.layout, snapshot.fds()
    assert layout.offset.min() >= 0, f"{dataset}: rows without an offset"
    local = threading.local()

    def read(batch: np.ndarray) -> int:
        if not hasattr(local, "out"):  # one batch buffer and one stored-chunk buffer per thread
            local.out = np.empty((args.batch, layout.row_bytes), np.uint8)
            local.chunk = memoryview(bytearray(int(layout.size.max())))
        rows = batch.tolist()
        files, offsets, sizes, coded = (a[rows].tolist() for a in (layout.file_of, layout.offset, layout.size, layout.coded))
        for j, (f, o, s, c) in enumerate(zip(files, offsets, sizes, coded)):
            if c:
                os.preadv(fds[f], (local.chunk[:s],), o)
                layout.decoders[f](local.chunk[:s], out=local.out[j])
            else:
                os.preadv(fds[f], (local.out[j].data,), o)
        return len(rows)

    pool = ThreadPoolExecutor(args.threads)
    n = len(snapshot)

    def epoch(e: int) -> int:
        order = np.random.default_rng([SEED, e]).permutation(n)
        return sum(pool.map(read, [order[k : k + args.batch] for k in range(0, n, args.batch)]))

    return epoch


def file_read(dataset: str, args) -> callable:
    """The disk's limit: the rows' bytes of each file read in order, in 8 MiB pieces, by ``--threads`` threads
    (the same bytes an epoch reads, into one reused buffer per thread)."""
    from concurrent.futures import ThreadPoolExecutor

    from imgshard.read import Snapshot

    snapshot = Snapshot(dataset)
    layout, fds = snapshot.layout, snapshot.fds()
    piece = 8 << 20
    ranges = []  # (file, first byte, end) of each run of rows stored back to back
    order = np.lexsort((layout.offset, layout.file_of))
    for i in order.tolist():
        f, o = int(layout.file_of[i]), int(layout.offset[i])
        if ranges and ranges[-1][0] == f and ranges[-1][2] == o:
            ranges[-1][2] = o + layout.row_bytes
        else:
            ranges.append([f, o, o + layout.row_bytes])
    pieces = [(f, o, min(piece, end - o)) for f, start, end in ranges for o in range(start, end, piece)]
    local = threading.local()

    def read(p):
        if not hasattr(local, "buf"):
            local.buf = memoryview(bytearray(piece))  # one buffer per thread, reused
        f, o, size = p
        return os.preadv(fds[f], (local.buf[:size],), o)

    pool = ThreadPoolExecutor(args.threads)

    def epoch(e: int) -> int:
        list(pool.map(read, pieces, chunksize=4))
        return len(snapshot)

    return epoch


def block_read(dataset: str, args) -> callable:
    """The disk's limit for the block order: the blocks of ``--block-bytes`` read whole, in the order an epoch
    first needs them, by ``--threads`` threads (the Loader also reads each row out of the page cache)."""
    from concurrent.futures import ThreadPoolExecutor

    from imgshard import Loader

    ld = Loader(dataset, batch_size=args.batch, shuffle="block", seed=SEED, block_bytes=args.block_bytes)
    layout, fds, ahead = ld.snapshot.layout, ld.snapshot.fds(), ld._blocks
    local = threading.local()

    def read(block):
        first, size = int(ahead.starts[block]), int(ahead.counts[block]) * layout.row_bytes
        if not hasattr(local, "buf"):
            local.buf = memoryview(bytearray(args.block_bytes + layout.row_bytes))
        return os.preadv(fds[int(layout.file_of[first])], (local.buf[:size],), int(layout.offset[first]))

    pool = ThreadPoolExecutor(args.threads)

    def epoch(e: int) -> int:
        ld.set_epoch(e)
        ahead.plan(ld._batches(), 0)
        list(pool.map(read, ahead._order))
        return len(ld.snapshot)

    return epoch


def _shuffle(args):
    return {"true": True, "false": False, "block": "block"}[args.shuffle]


def loader(dataset: str, args) -> callable:
    from imgshard import Loader

    ld = Loader(dataset, batch_size=args.batch, shuffle=False if args.sequential else _shuffle(args), seed=SEED, block_bytes=args.block_bytes)

    def epoch(e: int) -> int:
        ld.set_epoch(e)
        return sum(len(images) for images, _ in ld)

    return epoch


def batches(dataset: str, args) -> callable:
    from imgshard import batches as batches_of

    def epoch(e: int) -> int:
        return sum(len(images) for images, _ in batches_of(dataset, args.batch, shuffle=True, seed=e))

    return epoch


def _torch_epochs(loader) -> callable:
    def epoch(e: int) -> int:
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(e)
        count = 0
        for batch in loader:
            if isinstance(batch, dict):  # LitData: a column per field
                batch = next(iter(batch.values()))
            images = batch[0] if isinstance(batch, (tuple, list)) else batch
            count += len(images)
        return count

    return epoch


def dataloader(dataset: str, args) -> callable:
    """H5ImageDataset in torch's DataLoader: batches read at once in each worker (``collate``);
    ``--shuffle block``: in block order (imgshard.BlockSampler)."""
    import torch

    from imgshard import BlockSampler, H5ImageDataset, collate

    ds = H5ImageDataset(dataset)
    order = _shuffle(args)
    sampler = BlockSampler(ds, args.batch, seed=SEED, block_bytes=args.block_bytes) if order == "block" else None
    return _torch_epochs(
        torch.utils.data.DataLoader(
            ds, batch_size=args.batch, shuffle=order is True, sampler=sampler, num_workers=args.workers,
            persistent_workers=True, collate_fn=collate,
        )
    )  # fmt: skip


def dataloader_default_collate(dataset: str, args) -> callable:
    """The same with torch's default collate: the items stacked once more in each worker."""
    import torch

    from imgshard import H5ImageDataset

    ds = H5ImageDataset(dataset)
    return _torch_epochs(torch.utils.data.DataLoader(ds, batch_size=args.batch, shuffle=True, num_workers=args.workers, persistent_workers=True))


class JpegFolder:
    """What users do without imgshard: decode and resize every JPEG in every epoch."""

    def __init__(self, folder: str, size: tuple[int, int]):
        self.paths = sorted(os.path.join(folder, p) for p in os.listdir(folder) if p.endswith(".jpg"))
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        import cv2

        cv2.setNumThreads(1)
        image = cv2.imread(self.paths[i], cv2.IMREAD_COLOR_RGB)
        return cv2.resize(image, self.size[::-1], interpolation=cv2.INTER_AREA)


def jpeg_folder(folder: str, args) -> callable:
    import torch

    height, width = map(int, args.size.split(","))
    ds = JpegFolder(folder, (height, width))
    return _torch_epochs(torch.utils.data.DataLoader(ds, batch_size=args.batch, shuffle=True, num_workers=args.workers, persistent_workers=True))


def litdata(folder: str, args) -> callable:
    """LitData's StreamingDataLoader over an ``optimize``d copy of the same decoded arrays."""
    import litdata as ld

    ds = ld.StreamingDataset(folder, shuffle=True, seed=SEED)
    return _torch_epochs(ld.StreamingDataLoader(ds, batch_size=args.batch, num_workers=args.workers, persistent_workers=True))


READERS = {
    "limit": limit,
    "pread_limit": pread_limit,
    "loader": loader,
    "batches": batches,
    "decode_limit": decode_limit,
    "file_read": file_read,
    "block_read": block_read,
    "dataloader": dataloader,
    "dataloader_default_collate": dataloader_default_collate,
    "jpeg_folder": jpeg_folder,
    "litdata": litdata,
}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser()
    p.add_argument("reader", choices=READERS)
    p.add_argument("dataset")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--warm", type=int, default=1, help="epochs read before timing")
    p.add_argument("--seconds", type=float, default=1.0, help="time whole epochs until this many seconds have passed")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--size", default="224,224", help="jpeg_folder: the size to resize to")
    p.add_argument("--cold", action="store_true", help="drop the dataset's files from the page cache before the timed epoch")
    p.add_argument("--sequential", action="store_true", help="loader: rows in order, not shuffled")
    p.add_argument("--shuffle", default="true", choices=["true", "false", "block"], help="loader, dataloader: the epoch's order")
    p.add_argument("--block-bytes", type=int, default=4 << 20, help="shuffle block: bytes a block")
    p.add_argument("--threads", type=int, default=1, help="file_read, block_read, decode_limit: threads reading")
    args = p.parse_args(argv)
    epoch = READERS[args.reader](args.dataset, args)
    for e in range(args.warm):  # page cache, workers started
        epoch(e)
    if args.cold:
        drop_cache(files_of(args.dataset))
    # Timed epochs until at least --seconds have passed (one only when cold): short epochs are noisy.
    count = epochs = 0
    started = time.perf_counter()
    while True:
        count += epoch(args.warm + epochs)
        epochs += 1
        seconds = time.perf_counter() - started
        if args.cold or seconds >= args.seconds:
            break
    out = {"reader": args.reader, "images": count, "epochs": epochs, "seconds": round(seconds, 4), "images_per_s": round(count / seconds, 1)}
    print(json.dumps(out), flush=True)
    return out


if __name__ == "__main__":
    main()
