"""Step 5, gather: the shard files become one dataset.

``virtual`` maps the shards' ``images`` into one HDF5 virtual dataset (no pixel
is copied; the shard files must stay beside it). ``copy`` moves the stored
chunks into one self-contained file without decompressing them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import h5py
import numpy as np

from .errors import ImgshardError
from .write import (
    IMAGES,
    compression_args,
    read_index,
    read_skipped,
    temp_name,
    write_attrs,
    write_index,
    write_skipped,
)


def _check_shard(path: str, shape: tuple[int, int]) -> int:
    """Number of images in shard ``path``, after checking it is what gather will map.

    A virtual dataset whose source is missing or of another shape reads back as
    zeros without an error, so this is the last place to catch it.
    """
    if not os.path.isfile(path):
        raise ImgshardError(f"{path}: shard file is missing")
    try:
        with h5py.File(path, "r") as f:
            images = f[IMAGES]
            count = images.shape[0]
            expected = (count, shape[0], shape[1], 3)
            if images.shape != expected or images.dtype != np.uint8:
                raise ImgshardError(
                    f"{path}: images are {images.shape} {images.dtype}, expected {expected} uint8"
                )
            if len(f["paths"]) != count:
                raise ImgshardError(f"{path}: {len(f['paths'])} paths for {count} images")
            return count
    except OSError as e:
        raise ImgshardError(f"{path}: not a readable HDF5 shard file ({e})") from None


@dataclass
class Gathered:
    images: int
    skipped: list[tuple[str, str]]


def gather(
    shard_files: list[str],
    out_path: str,
    shape: tuple[int, int],
    *,
    mode: str = "virtual",
    compression: str = "none",
    attrs: dict | None = None,
) -> Gathered:
    """Write the dataset ``out_path`` from ``shard_files`` (in order)."""
    counts = [_check_shard(p, shape) for p in shard_files]
    total = sum(counts)
    height, width = shape
    out_dir = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(out_dir, exist_ok=True)
    tmp = temp_name(out_path)
    paths: list[str] = []
    sha256: list[str] = []
    sizes: list[np.ndarray] = []
    skipped: list[tuple[str, str]] = []
    try:
        with h5py.File(tmp, "w") as out:
            if mode == "virtual":
                layout = h5py.VirtualLayout(shape=(total, height, width, 3), dtype=np.uint8)
            else:
                images = out.create_dataset(
                    IMAGES,
                    shape=(total, height, width, 3),
                    dtype=np.uint8,
                    chunks=(1, height, width, 3),
                    **compression_args(compression),
                )
            offset = 0
            for path, count in zip(shard_files, counts):
                with h5py.File(path, "r") as src:
                    p, s, z = read_index(src)
                    paths += p
                    sha256 += s
                    sizes.append(z)
                    skipped += read_skipped(src)
                    if count and mode == "virtual":
                        # Relative to the dataset's folder, so results/ can move as a whole.
                        rel = os.path.relpath(os.path.abspath(path), out_dir)
                        layout[offset : offset + count] = h5py.VirtualSource(rel, IMAGES, shape=(count, height, width, 3))
                    elif count:
                        _copy_chunks(src[IMAGES], images, offset)
                offset += count
            if mode == "virtual":
                out.create_virtual_dataset(IMAGES, layout, fillvalue=0)
            write_index(out, paths, sha256, np.concatenate(sizes) if sizes else np.zeros((0, 2)))
            write_skipped(out, skipped)
            write_attrs(out, {"gather": mode, **(attrs or {})})
        os.replace(tmp, out_path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return Gathered(total, skipped)


def _copy_chunks(src: h5py.Dataset, dst: h5py.Dataset, offset: int) -> None:
    """Copy one stored chunk (one image) at a time, as stored: compressed chunks stay compressed."""
    same_filters = src.compression == dst.compression and src.chunks == dst.chunks
    for i in range(src.shape[0]):
        if same_filters:
            mask, chunk = src.id.read_direct_chunk((i, 0, 0, 0))
            dst.id.write_direct_chunk((offset + i, 0, 0, 0), chunk, mask)
        else:
            dst[offset + i] = src[i]
