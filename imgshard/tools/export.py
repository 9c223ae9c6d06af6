"""Tools, export: a self-contained copy of a dataset, for a reader that opens no file but the one it is given.

    imgshard export results/train.h5 train-copy.h5

A virtual dataset reads its rows from the part files beside it; Hugging Face
``datasets`` (``load_dataset("hdf5", ...)``) and a file sent elsewhere need
every row in the one file. This writes what ``gather: copy`` writes, from the
snapshot the dataset names now: images and masks' bits contiguous (chunked
when compressed), labels, the listing and the attributes, through a
temporary file. A dataset of format 2 comes out in format 3 (masks packed).
"""

from __future__ import annotations

import os

import h5py
import numpy as np

from ..errors import ImgshardError
from ..codecs import COMPRESSIONS, pack_masks
from ..format import CLASS_COUNTS_ATTR, GATHER_ATTR, IMAGES, LABELS, MASKS, ORIGINAL_SIZE, PATHS, SHA256, SNAPSHOT_ATTR
from ..read.snapshot import Snapshot
from ..temp import temp_name
from ..build.part import COPY_BYTES, create_mask_bits, create_rows, ensure_space


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
        compression = snapshot.compression
        if compression not in COMPRESSIONS:  # another writer's filters: written plainly
            compression = "none"
        with snapshot.h5() as src, h5py.File(tmp, "w") as dst:
            images = create_rows(dst, IMAGES, n, tail, compression)
            step = max(1, COPY_BYTES // int(np.prod(tail)))
            buffer = np.empty((min(step, max(n, 1)), *tail), np.uint8)
            views = [memoryview(row).cast("B") for row in buffer]
            for start in range(0, n, step):
                rows = list(range(start, min(n, start + step)))
                snapshot.read_images(rows, views, buffer)
                images.write_direct(buffer, np.s_[: len(rows)], np.s_[start : start + len(rows)])
            if snapshot.target == MASKS:
                bits = create_mask_bits(dst, n, snapshot.target_shape, snapshot.classes, compression)
                if CLASS_COUNTS_ATTR in src[snapshot.masks_name].attrs:
                    bits.attrs[CLASS_COUNTS_ATTR] = src[snapshot.masks_name].attrs[CLASS_COUNTS_ATTR]
                masks = np.empty((64, *snapshot.target_shape), np.uint8)
                packed = np.empty((64, bits.shape[1]), np.uint8)
                for start in range(0, n, len(masks)):
                    rows = list(range(start, min(n, start + len(masks))))
                    snapshot.read_masks(rows, masks)
                    for j in range(len(rows)):
                        pack_masks(masks[j], packed[j])
                    bits.write_direct(packed, np.s_[: len(rows)], np.s_[start : start + len(rows)])
            for name in (PATHS, SHA256, ORIGINAL_SIZE, LABELS):
                if name in src:
                    src.copy(src[name], dst, name)
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
