"""Publish, the gather: the shards' indexes become one dataset file (a new snapshot, published by snapshots.py).

``virtual`` maps the rows each index names, in the parts that hold them, into
one HDF5 virtual dataset: no pixel is copied, and the parts must stay beside
it (they do: no part is ever changed, and none a published dataset maps is
removed while a reader holds it). ``copy`` writes every row into one
self-contained file, as stored: contiguous rows (images, masks' bits) by
the kernel's ``copy_file_range``, compressed chunks without decompressing
them. Either
way the dataset lists each shard's images in its list order.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import h5py
import numpy as np

from ..errors import ImgshardError
from ..build.index import ShardIndex, read_index, read_skipped, write_attrs, write_listing
from ..codecs import mask_bytes
from ..format import CLASS_COUNTS_ATTR, CLASSES_ATTR, GATHER_ATTR, IMAGES, LABELS, MASK_BITS, MASKS, SKIPPED_ATTR
from ..build.part import copy_chunk, create_mask_bits, create_rows, describe_mask_bits, ensure_space, stored_alike


def skipped_of(f: h5py.File) -> list[tuple[str, str]]:
    """The images a dataset left out, with their reasons (a group of datasets in files of older versions)."""
    if SKIPPED_ATTR in f.attrs:
        return [tuple(s) for s in json.loads(f.attrs[SKIPPED_ATTR])]
    return read_skipped(f)


@dataclass
class Gathered:
    images: int
    skipped: list[tuple[str, str]]
    parts: list[str]  # every part file the dataset's rows come from, absolute
    listing: dict[str, str]  # each image's path: its sha256


def part_paths(index_path: str, index: ShardIndex) -> list[str]:
    folder = os.path.dirname(os.path.abspath(index_path))
    return [os.path.join(folder, p) for p in index.parts]


def check_parts(index_path: str, index: ShardIndex, shape: tuple[int, int]) -> list[str]:
    """The parts of ``index`` (absolute), after checking each is there with the rows the index names.

    A virtual dataset whose source is missing, or too short, reads back as zeros
    without an error: this is the last place to catch it before publishing.
    """
    files = part_paths(index_path, index)
    for path, rows in zip(files, index.part_rows):
        try:
            with h5py.File(path, "r") as f:
                images = f[IMAGES]
                expected = (rows, shape[0], shape[1], 3)
                if images.shape != expected or images.dtype != np.uint8:
                    raise ImgshardError(f"{path}: images are {images.shape} {images.dtype}, expected {expected} uint8")
                if images.chunks is None and images.id.get_offset() is not None:
                    end = images.id.get_offset() + images.id.get_storage_size()
                    if os.path.getsize(path) < end:
                        raise ImgshardError(f"{path}: truncated ({os.path.getsize(path)} bytes, its rows end at {end}); delete it and rerun")
        except FileNotFoundError:
            raise ImgshardError(f"{path}: part file of shard {index_path} is missing; delete {index_path} and rerun") from None
        except OSError as e:
            what = "truncated (shorter than HDF5 wrote it)" if "truncated file" in str(e) else f"not a readable part file ({e})"
            raise ImgshardError(f"{path}: {what}; delete {index_path} and rerun") from None
    if len(index) and (index.part.max() >= len(files) or (index.row >= np.take(index.part_rows, index.part)).any()):
        raise ImgshardError(f"{index_path}: names rows its parts do not have; delete it and rerun")
    return files


def gather(
    shard_indexes: list[str],
    out_path: str,
    shape: tuple[int, int],
    *,
    mode: str = "virtual",
    compression: str = "none",
    attrs: dict | None = None,
    left_out: list[tuple[str, str]] = (),
    mapped_from: str | None = None,
) -> Gathered:
    """Write the dataset file ``out_path`` from ``shard_indexes`` (in order).

    A virtual dataset names its parts relative to ``mapped_from``, the folder
    it is read from (default: ``out_path``'s), so that folder can move as a whole.
    """
    indexes = [read_index(p) for p in shard_indexes]
    files = [check_parts(p, ix, shape) for p, ix in zip(shard_indexes, indexes)]
    total = sum(len(ix) for ix in indexes)
    out_dir = os.path.abspath(mapped_from or os.path.dirname(os.path.abspath(out_path)))
    # A copy holds every stored row again; a virtual dataset only their index.
    if mode == "copy":
        ensure_space(out_path, sum(os.path.getsize(p) for fs in files for p in fs))
    first = next((ix for ix in indexes if ix.kind), indexes[0] if indexes else ShardIndex())
    kind, classes = first.kind, first.classes
    skipped = [s for ix in indexes for s in ix.skipped] + list(left_out)
    byte_copies = []  # (dataset, its offset in out_path) of contiguous targets, filled once HDF5 has closed the file
    mask_shape = (*shape, len(classes))
    with h5py.File(out_path, "w") as out:
        stacks = {IMAGES: (*shape, 3)}
        if kind == MASKS:
            stacks[MASK_BITS] = (mask_bytes(mask_shape),)
        for name, tail in stacks.items():
            if mode == "virtual":
                target = _virtual(out, name, tail, indexes, files, out_dir, total)
                if name == MASK_BITS:
                    describe_mask_bits(target, mask_shape, classes)
                continue
            contiguous = compression == "none"
            # A contiguous target is allocated now and never filled: every row is copied in below.
            extra = {"dcpl": _allocated_unfilled()} if contiguous else {}
            if name == MASK_BITS:
                target = create_mask_bits(out, total, mask_shape, classes, compression, **extra)
            else:
                target = create_rows(out, name, total, tail, compression, **extra)
            if not contiguous:
                _copy_chunks(target, indexes, files)
            elif total:
                byte_copies.append((name, target.id.get_offset()))
        write_listing(
            out,
            [p for ix in indexes for p in ix.paths],
            [s for ix in indexes for s in ix.sha256],
            np.concatenate([ix.sizes for ix in indexes]) if indexes else np.zeros((0, 2)),
        )
        if kind == LABELS:
            out.create_dataset(LABELS, data=np.concatenate([ix.labels for ix in indexes]).astype(np.int64))
            out[LABELS].attrs[CLASSES_ATTR] = list(classes)
        if kind:
            counts = np.sum([ix.class_counts for ix in indexes if ix.class_counts is not None], axis=0)
            out[MASK_BITS if kind == MASKS else LABELS].attrs[CLASS_COUNTS_ATTR] = (np.zeros(len(classes)) + counts).astype(np.int64)
        # An attribute, not a group of datasets: readers that take every dataset as a column of N rows would trip on it.
        out.attrs[SKIPPED_ATTR] = json.dumps([list(s) for s in skipped])
        write_attrs(out, {GATHER_ATTR: mode, **(attrs or {})})
    for name, offset in byte_copies:
        _copy_bytes(out_path, name, offset, stacks[name], indexes, files)
    listing = {p: s for ix in indexes for p, s in zip(ix.paths, ix.sha256)}
    return Gathered(total, skipped, [p for fs in files for p in fs], listing)


def _virtual(out: h5py.File, name: str, tail: tuple, indexes, files, out_dir: str, total: int) -> h5py.Dataset:
    layout = h5py.VirtualLayout(shape=(total, *tail), dtype=np.uint8)
    offset = 0
    for ix, fs in zip(indexes, files):
        # Relative to the dataset's folder, so results/ can move as a whole.
        sources = [h5py.VirtualSource(os.path.relpath(f, out_dir), name, shape=(rows, *tail)) for f, rows in zip(fs, ix.part_rows)]
        # One mapping per run of consecutive rows of one part: one per part for a fresh shard.
        for part, row, first, count in ix.runs():
            layout[offset + first : offset + first + count] = sources[part][row : row + count]
        offset += len(ix)
    return out.create_virtual_dataset(name, layout, fillvalue=0)


def _allocated_unfilled() -> h5py.h5p.PropDCID:
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    dcpl.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    return dcpl


def _copy_chunks(target: h5py.Dataset, indexes, files) -> None:
    """Every row into the chunked ``target`` in dataset order, chunk by chunk as stored where the parts
    are chunked alike (compressed rows stay compressed), else row by row."""
    name = target.name.lstrip("/")
    offset = 0
    for ix, fs in zip(indexes, files):
        opened = [h5py.File(f, "r") for f in fs]
        try:
            for part, row, first, count in ix.runs():
                src = opened[part][name]
                same = stored_alike(src, target)
                for k in range(count):
                    if same:
                        copy_chunk(src, row + k, target, offset + first + k)
                    else:
                        target[offset + first + k] = src[row + k]
        finally:
            for f in opened:
                f.close()
        offset += len(ix)


def _copy_bytes(out_path: str, name: str, base: int, tail: tuple, indexes, files) -> None:
    """Every row into the contiguous dataset ``name`` of ``out_path`` at ``base``, by the kernel
    (``copy_file_range``: no pass through this process, a reflink where the filesystem has them)."""
    row_bytes = int(np.prod(tail))
    fd = os.open(out_path, os.O_WRONLY)
    try:
        offset = 0
        for ix, fs in zip(indexes, files):
            starts = []
            for f in fs:
                with h5py.File(f, "r") as part:
                    starts.append(part[name].id.get_offset())
            for part, row, first, count in ix.runs():
                src = os.open(fs[part], os.O_RDONLY)
                try:
                    _copy_range(src, fd, count * row_bytes, starts[part] + row * row_bytes, base + (offset + first) * row_bytes)
                finally:
                    os.close(src)
            offset += len(ix)
    finally:
        os.close(fd)


def _copy_range(src: int, dst: int, count: int, src_offset: int, dst_offset: int) -> None:
    while count > 0:
        try:
            done = os.copy_file_range(src, dst, count, src_offset, dst_offset)
        except OSError:  # a filesystem or kernel without it for these files: through a buffer
            done = os.pwrite(dst, os.pread(src, min(count, 64 << 20), src_offset), dst_offset)
        if done == 0:
            raise ImgshardError(f"part file ended early while copying {count} more bytes; delete the shard's index and rerun")
        count, src_offset, dst_offset = count - done, src_offset + done, dst_offset + done
