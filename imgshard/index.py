"""Step 4, write: a shard's index, the small file Snakemake tracks as the shard job's output.

A shard's pixels live in immutable part files (``<stem>.shards/parts/``, see
write.py): a file, once renamed into place, is never changed, so a reader
holding a snapshot that maps it always reads what it was built from. The
index says which part, and which row of it, holds each listed image, and
carries everything else about the images: paths, digests, sizes, labels,
row keys for reuse, and the images that were skipped.

A rerun writes a new index, and a new part only for what it decoded (or, when
the old parts would waste too much, one fresh part: see reuse.py). The
gather maps the rows the index names.
"""

from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass, field

import h5py
import numpy as np

from . import __version__
from .errors import ImgshardError
from .temp import remove_stale_temps, temp_name

IMAGES = "images"
MASKS = "masks"
LABELS = "labels"
PATHS = "paths"
SHA256 = "sha256"
ORIGINAL_SIZE = "original_size"
SKIPPED = "skipped"  # group: paths and reasons of the images on_error: skip left out
CLASS_COUNTS = "class_counts"  # attribute of masks or labels: images per class
ROW_KEYS = "row_keys"  # what each image's row was made from (see reuse.py)
ROW_KEY_DTYPE = "S32"
PARTS = "parts"  # the part files, relative to the shard folder
PART_ROWS = "part_rows"  # rows of each part's images dataset
PART_BYTES = "part_bytes"  # each part file's size: a part that no longer has it is damaged
PART = "part"  # each listed image's part
ROW = "row"  # and its row there
# Bump when the files a shard job writes change shape: a shard job's settings
# carry it, so every shard reruns once after an upgrade.
FORMAT = 2

PATH_DTYPE = h5py.string_dtype("utf-8")
SHA256_DTYPE = h5py.string_dtype("ascii", 64)


@dataclass
class ShardIndex:
    paths: list[str] = field(default_factory=list)
    sha256: list[str] = field(default_factory=list)
    sizes: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int32))  # (height, width) of each source
    parts: list[str] = field(default_factory=list)
    part_rows: list[int] = field(default_factory=list)
    part_bytes: list[int] = field(default_factory=list)
    part: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    row: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    row_keys: list[bytes] | None = None
    kind: str | None = None  # "masks", "labels" or None
    classes: list[str] = field(default_factory=list)
    labels: np.ndarray | None = None  # class index of each image, with kind "labels"
    class_counts: list[int] | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    attrs: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.paths)

    def runs(self):
        """(part, first row there, first image, count) of each run of images in consecutive rows of one part."""
        n = len(self.paths)
        start = 0
        for i in range(1, n + 1):
            if i == n or self.part[i] != self.part[i - 1] or self.row[i] != self.row[i - 1] + 1:
                yield int(self.part[start]), int(self.row[start]), start, i - start
                start = i

    def damaged_parts(self, folder: str) -> list[str]:
        """The parts (absolute) that are gone or no longer the size they were written with."""
        damaged = []
        for name, size in zip(self.parts, self.part_bytes):
            path = os.path.join(folder, name)
            try:
                if os.path.getsize(path) != size:
                    damaged.append(path)
            except FileNotFoundError:
                damaged.append(path)
        return damaged


def write_index(path: str, index: ShardIndex) -> None:
    """Write ``index`` to ``path`` through a temporary file: a reader sees the old index or the new one."""
    remove_stale_temps(glob.escape(path))
    tmp = temp_name(path)
    try:
        with h5py.File(tmp, "w") as f:
            write_listing(f, index.paths, index.sha256, index.sizes)
            write_skipped(f, index.skipped)
            f.create_dataset(PARTS, data=np.array(index.parts, dtype=object), dtype=PATH_DTYPE)
            f.create_dataset(PART_ROWS, data=np.asarray(index.part_rows, np.int64))
            f.create_dataset(PART_BYTES, data=np.asarray(index.part_bytes, np.int64))
            f.create_dataset(PART, data=np.asarray(index.part, np.int32))
            f.create_dataset(ROW, data=np.asarray(index.row, np.int64))
            if index.row_keys is not None:
                f.create_dataset(ROW_KEYS, data=np.array(index.row_keys, dtype=ROW_KEY_DTYPE))
            if index.kind == LABELS:
                f.create_dataset(LABELS, data=np.asarray(index.labels, np.int64).reshape(-1))
            write_attrs(f, index.attrs)
            if index.kind:
                f.attrs["target"] = index.kind
                f.attrs["classes"] = list(index.classes)
                f.attrs[CLASS_COUNTS] = np.asarray(index.class_counts, np.int64)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_index(path: str) -> ShardIndex:
    """The index at ``path``; ImgshardError naming it when it is missing or not one."""
    if not os.path.isfile(path):
        raise ImgshardError(f"{path}: shard index is missing")
    try:
        with h5py.File(path, "r") as f:
            if PARTS not in f:
                raise ImgshardError(f"{path}: not a shard index of this imgshard (format {FORMAT}); rerun the pipeline")
            paths, sha256, sizes = read_listing(f)
            kind = f.attrs.get("target") or None
            return ShardIndex(
                paths=paths,
                sha256=sha256,
                sizes=sizes,
                parts=list(f[PARTS].asstr()[()]),
                part_rows=f[PART_ROWS][()].tolist(),
                part_bytes=f[PART_BYTES][()].tolist(),
                part=f[PART][()],
                row=f[ROW][()],
                row_keys=f[ROW_KEYS][()].tolist() if ROW_KEYS in f else None,
                kind=kind,
                classes=[str(c) for c in f.attrs.get("classes", [])],
                labels=f[LABELS][()] if LABELS in f else None,
                class_counts=f.attrs[CLASS_COUNTS].tolist() if CLASS_COUNTS in f.attrs else None,
                skipped=read_skipped(f),
                attrs={k: v for k, v in f.attrs.items() if k not in ("target", "classes", CLASS_COUNTS)},
            )
    except OSError as e:
        raise ImgshardError(f"{path}: not a readable shard index ({e}); delete it and rerun") from None


def write_listing(f: h5py.File, paths: list[str], sha256: list[str], sizes: np.ndarray) -> None:
    """The datasets that list a file's images: ``paths``, ``sha256`` and ``original_size``."""
    f.create_dataset(PATHS, data=np.array(paths, dtype=object), dtype=PATH_DTYPE)
    f.create_dataset(SHA256, data=np.array(sha256, dtype="S64"), dtype=SHA256_DTYPE)
    f.create_dataset(ORIGINAL_SIZE, data=np.asarray(sizes, dtype=np.int32).reshape(-1, 2))


def read_listing(f: h5py.File) -> tuple[list[str], list[str], np.ndarray]:
    return list(f[PATHS].asstr()[()]), list(f[SHA256].asstr()[()]), f[ORIGINAL_SIZE][()]


def write_skipped(f: h5py.File, skipped: list[tuple[str, str]]) -> None:
    group = f.create_group(SKIPPED)
    group.create_dataset(PATHS, data=np.array([p for p, _ in skipped], dtype=object), dtype=PATH_DTYPE)
    group.create_dataset("reasons", data=np.array([r for _, r in skipped], dtype=object), dtype=PATH_DTYPE)


def read_skipped(f: h5py.File) -> list[tuple[str, str]]:
    if SKIPPED not in f:
        return []
    group = f[SKIPPED]
    return list(zip(group[PATHS].asstr()[()], group["reasons"].asstr()[()]))


def write_attrs(f: h5py.File, attrs: dict) -> None:
    f.attrs["imgshard_version"] = __version__
    for key, value in attrs.items():
        f.attrs[key] = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value
