"""Step 5, gather: the shard files become one dataset.

``virtual`` maps the shards' ``images`` into one HDF5 virtual dataset (no pixel
is copied; the shard files must stay beside it). ``copy`` moves the stored
chunks into one self-contained file without decompressing them. Either way the
dataset lists each shard's images in its list order, following the shard's
``slots`` to the rows that hold them (a rerun may have put an added image in a
freed or appended row: see reuse.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import h5py
import numpy as np

from .errors import ImgshardError
from .write import (
    CLASS_COUNTS,
    IMAGES,
    LABELS,
    MASKS,
    compression_args,
    copy_chunk,
    ensure_space,
    mask_compression,
    read_index,
    read_skipped,
    read_slots,
    runs,
    target_of,
    temp_name,
    write_attrs,
    write_index,
    write_labels,
    write_skipped,
)


def _check_shard(path: str, shape: tuple[int, int]) -> np.ndarray:
    """The slots of the images in shard ``path`` (see write.SLOTS), after checking it is what gather will map.

    A virtual dataset whose source is missing or of another shape reads back as
    zeros without an error, so this is the last place to catch it.
    """
    if not os.path.isfile(path):
        raise ImgshardError(f"{path}: shard file is missing")
    try:
        with h5py.File(path, "r") as f:
            images = f[IMAGES]
            rows = images.shape[0]
            expected = (rows, shape[0], shape[1], 3)
            if images.shape != expected or images.dtype != np.uint8:
                raise ImgshardError(
                    f"{path}: images are {images.shape} {images.dtype}, expected {expected} uint8"
                )
            slots = read_slots(f)
            count = len(slots)
            if count and (slots.min() < 0 or slots.max() >= rows or len(np.unique(slots)) != count):
                raise ImgshardError(f"{path}: its slots do not each name a row of its {rows} images")
            if len(f["paths"]) != count:
                raise ImgshardError(f"{path}: {len(f['paths'])} paths for {count} images")
            if "masks" in f and f["masks"].shape[0] != rows:
                raise ImgshardError(f"{path}: {f['masks'].shape[0]} rows of masks for {rows} rows of images")
            if "labels" in f and f["labels"].shape[0] != count:
                raise ImgshardError(f"{path}: {f['labels'].shape[0]} labels for {count} images")
            return slots
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
    left_out: list[tuple[str, str]] = (),
) -> Gathered:
    """Write the dataset ``out_path`` from ``shard_files`` (in order).

    ``left_out``: images no shard saw (no row in the labels, on_error: skip), for the skipped group.
    """
    slots = [_check_shard(p, shape) for p in shard_files]
    total = sum(len(s) for s in slots)
    out_dir = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(out_dir, exist_ok=True)
    # A copy holds every stored byte of the shards again; a virtual dataset only their index.
    ensure_space(out_path, sum(os.path.getsize(p) for p in shard_files) if mode == "copy" else 0)
    tmp = temp_name(out_path)
    paths: list[str] = []
    sha256: list[str] = []
    sizes: list[np.ndarray] = []
    skipped: list[tuple[str, str]] = []
    labels: list[np.ndarray] = []
    class_counts = 0
    try:
        with h5py.File(tmp, "w") as out:
            with h5py.File(shard_files[0], "r") as first:
                # Pixels, and masks when the shards have them: mapped or copied alike.
                stacks = {IMAGES: first[IMAGES].shape[1:]}
                if MASKS in first:
                    stacks[MASKS] = first[MASKS].shape[1:]
                    classes = list(first[MASKS].attrs["classes"])
                if LABELS in first:
                    classes = list(first[LABELS].attrs["classes"])
            targets = {name: _target(out, name, (total, *tail), mode, compression) for name, tail in stacks.items()}
            offset = 0
            for path, shard_slots in zip(shard_files, slots):
                count = len(shard_slots)
                with h5py.File(path, "r") as src:
                    p, s, z = read_index(src)
                    paths += p
                    sha256 += s
                    sizes.append(z)
                    skipped += read_skipped(src)
                    if LABELS in src:
                        labels.append(src[LABELS][()])
                    counted = target_of(src)
                    if counted is not None and CLASS_COUNTS in counted.attrs:
                        class_counts = class_counts + counted.attrs[CLASS_COUNTS]
                    for name, target in targets.items():
                        if not count:
                            continue
                        if mode == "virtual":
                            # Relative to the dataset's folder, so results/ can move as a whole.
                            rel = os.path.relpath(os.path.abspath(path), out_dir)
                            source = h5py.VirtualSource(rel, name, shape=src[name].shape)
                            # One mapping per run of consecutive rows: one for a fresh shard file.
                            for row, i, length in runs([(int(r), i) for i, r in enumerate(shard_slots)]):
                                target[offset + i : offset + i + length] = source[row : row + length]
                        else:
                            _copy_chunks(src[name], shard_slots, target, offset)
                offset += count
            for name, target in targets.items():
                if mode == "virtual":
                    target = out.create_virtual_dataset(name, target, fillvalue=0)
                if name == MASKS:
                    target.attrs["classes"] = classes
            if labels:
                write_labels(out, np.concatenate(labels), classes)
            if target_of(out) is not None:
                target_of(out).attrs[CLASS_COUNTS] = np.zeros(len(classes), np.int64) + class_counts
            write_index(out, paths, sha256, np.concatenate(sizes) if sizes else np.zeros((0, 2)))
            write_skipped(out, skipped + list(left_out))
            write_attrs(out, {"gather": mode, **(attrs or {})})
        os.replace(tmp, out_path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return Gathered(total, skipped + list(left_out))


def _target(out: h5py.File, name: str, shape: tuple, mode: str, compression: str):
    """A virtual layout to fill, or the dataset to copy into."""
    if mode == "virtual":
        return h5py.VirtualLayout(shape=shape, dtype=np.uint8)
    args = mask_compression(compression) if name == MASKS else compression_args(compression)
    return out.create_dataset(name, shape=shape, dtype=np.uint8, chunks=(1, *shape[1:]), **args)


def _copy_chunks(src: h5py.Dataset, slots: np.ndarray, dst: h5py.Dataset, offset: int) -> None:
    """Copy one stored chunk (one image) at a time, as stored: compressed chunks stay compressed."""
    same_filters = src.compression == dst.compression and src.chunks == dst.chunks
    for i, row in enumerate(slots.tolist()):
        if same_filters:
            copy_chunk(src, row, dst, offset + i)
        else:
            dst[offset + i] = src[row]
