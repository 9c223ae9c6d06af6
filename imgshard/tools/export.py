"""Tools, export: a self-contained copy of a dataset, for a reader that opens no file but the one it is given.

    imgshard export results/train.h5 train-copy.h5

A virtual dataset reads its rows from the part files beside it; Hugging Face
``datasets`` (``load_dataset("hdf5", ...)``) and a file sent elsewhere need
every row in the one file. This writes what ``gather: copy`` writes, from the
snapshot the dataset names now: images contiguous (chunked when compressed),
masks, labels, the listing and the attributes, through a temporary file.
"""

from __future__ import annotations

import os

import h5py
import numpy as np

from ..errors import ImgshardError
from ..format import GATHER_ATTR, IMAGES, LABELS, MASKS, ORIGINAL_SIZE, PATHS, SHA256, SNAPSHOT_ATTR
from ..read.snapshot import Snapshot
from ..temp import temp_name
from ..build.part import COPY_BYTES, create_images, ensure_space


def export(source: str, out: str) -> int:
    """Write ``source`` as one self-contained file ``out``; the number of images."""
    if os.path.abspath(source) == os.path.abspath(out):
        raise ImgshardError(f"{out}: the copy must go to another file than {source}")
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise ImgshardError(f"{out}: folder {folder} does not exist")
    snapshot = Snapshot(source)
    tmp = temp_name(out)
    try:
        n = len(snapshot)
        tail = snapshot.shape[1:]
        ensure_space(out, n * int(np.prod(tail)) * snapshot.dtype.itemsize)
        compression = snapshot.compression or "none"
        with snapshot.h5() as src, h5py.File(tmp, "w") as dst:
            images = create_images(dst, IMAGES, n, tail, compression)
            step = max(1, COPY_BYTES // int(np.prod(tail)))
            buffer = np.empty((min(step, max(n, 1)), *tail), np.uint8)
            views = [memoryview(row).cast("B") for row in buffer]
            for start in range(0, n, step):
                rows = list(range(start, min(n, start + step)))
                snapshot.read_images(rows, views, buffer)
                images.write_direct(buffer, np.s_[: len(rows)], np.s_[start : start + len(rows)])
            if snapshot.target == MASKS:
                masks = create_images(dst, MASKS, n, snapshot.target_shape, compression)
                one = np.empty((1, *snapshot.target_shape), np.uint8)
                for i in range(n):
                    snapshot.read_masks([i], one)
                    masks.write_direct(one, np.s_[0:1], np.s_[i : i + 1])
            for name in (PATHS, SHA256, ORIGINAL_SIZE, LABELS):
                if name in src:
                    src.copy(src[name], dst, name)
            for name in (MASKS, LABELS):
                if name in src:
                    for key, value in src[name].attrs.items():
                        dst[name].attrs[key] = value
            for key, value in src.attrs.items():
                if key != SNAPSHOT_ATTR:
                    dst.attrs[key] = value
            dst.attrs[GATHER_ATTR] = "copy"
        os.replace(tmp, out)
        return n
    finally:
        snapshot.close()
        if os.path.exists(tmp):
            os.unlink(tmp)
