"""Build, steps 4 and 5 of a shard job, index and commit: the shard's index, the small file Snakemake tracks as its output.

A shard's pixels live in immutable part files (``<stem>.shards/parts/``, see
part.py): a file, once renamed into place, is never changed, so a reader
holding a snapshot that maps it always reads what it was built from. The
index says which part, and which row of it, holds each listed image, and
carries everything else about the images: paths, digests, sizes, labels,
row keys for reuse, and the images that were skipped. The gather
(publish/gather.py) reads it to map or copy those rows.

``commit`` writes it through a temporary file, then gives it its second name
``previous/shard-NNN.h5``, which the next run's plan reads (reuse.py).
"""

from __future__ import annotations

import glob
import json
import os
import sys
from dataclasses import dataclass, field

import h5py
import numpy as np

from .. import __version__
from ..errors import ImgshardError
from ..format import (
    CLASS_COUNTS_ATTR,
    CLASSES_ATTR,
    FORMAT,
    LABELS,
    ORIGINAL_SIZE,
    PART,
    PART_BYTES,
    PART_ROWS,
    PARTS,
    PATH_DTYPE,
    PATHS,
    REASONS,
    ROW,
    ROW_KEY_DTYPE,
    ROW_KEYS,
    SHA256,
    SHA256_DTYPE,
    SKIPPED,
    TARGET_ATTR,
    VERSION_ATTR,
)
from ..layout import previous_of
from ..temp import remove_stale_temps, temp_name


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


def make_index(plan, assembled, part, labels, attrs: dict) -> ShardIndex:
    """The shard's new index from the plan (what stays where it was) and what was assembled into the new
    ``part`` (``part.Written``, or None): every listed image that was not skipped, with its part and row."""
    previous, keys = plan.previous, plan.keys
    parts = [previous.parts[p] for p in plan.kept_parts]
    part_rows = [previous.part_rows[p] for p in plan.kept_parts]
    part_bytes = [previous.part_bytes[p] for p in plan.kept_parts]
    renumber = {p: k for k, p in enumerate(plan.kept_parts)}
    if part is not None:
        parts.append(part.name)
        part_rows.append(part.rows)
        part_bytes.append(part.bytes)
    new = len(parts) - 1
    index = ShardIndex(parts=parts, part_rows=part_rows, part_bytes=part_bytes, attrs=attrs, skipped=list(assembled.skipped))
    part_of, row_of, sizes, keep_keys = [], [], [], []
    for i, rel in enumerate(plan.relpaths):
        if plan.old[i] is not None:  # stays where it is
            p, r, j = plan.previous_ref(i)
            part_of.append(renumber[p])
            row_of.append(r)
            sha256, size = previous.sha256[j], previous.sizes[j]
        elif i in assembled.row_of:  # in the new part: decoded, or copied from an older part
            part_of.append(new)
            row_of.append(assembled.row_of[i])
            if i in assembled.decoded:
                sha256, size = assembled.decoded[i].sha256, assembled.decoded[i].size
            else:
                j = plan.previous_ref(i)[2]
                sha256, size = previous.sha256[j], previous.sizes[j]
        else:
            continue  # skipped
        index.paths.append(rel)
        index.sha256.append(sha256)
        sizes.append(tuple(int(v) for v in size))
        if keys is not None:
            keep_keys.append(keys[i])
    index.part = np.asarray(part_of, np.int32)
    index.row = np.asarray(row_of, np.int64)
    index.sizes = np.asarray(sizes, np.int32).reshape(-1, 2)
    index.row_keys = keep_keys if keys is not None else None
    if labels is not None:
        index.kind, index.classes = labels.kind, list(labels.classes)
        index.class_counts = labels.counts(index.paths)
        if labels.kind == LABELS:
            index.labels = np.array([labels.rows[p][0] for p in index.paths], np.int64)
    return index


def commit(path: str, index: ShardIndex, keep: bool) -> None:
    """Write ``index`` to ``path``; with ``keep``, make it the next run's previous index too."""
    write_index(path, index)
    if keep:
        _link_previous(path)


def _link_previous(path: str) -> None:
    """Give the finished index ``path`` its second name, replacing the previous one atomically."""
    previous = previous_of(path)
    tmp = temp_name(previous)
    try:
        os.makedirs(os.path.dirname(previous), exist_ok=True)
        remove_stale_temps(glob.escape(previous))
        if os.path.exists(tmp):
            os.unlink(tmp)
        os.link(path, tmp)
        os.replace(tmp, previous)
    except OSError as e:  # no hard links here, or no room for the folder: no reuse, nothing else lost
        print(f"reuse: cannot link {path} to {previous} ({e.strerror}); its next rerun decodes every image", file=sys.stderr)
        if os.path.exists(tmp):
            os.unlink(tmp)


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
                f.attrs[TARGET_ATTR] = index.kind
                f.attrs[CLASSES_ATTR] = list(index.classes)
                f.attrs[CLASS_COUNTS_ATTR] = np.asarray(index.class_counts, np.int64)
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
            kind = f.attrs.get(TARGET_ATTR) or None
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
                classes=[str(c) for c in f.attrs.get(CLASSES_ATTR, [])],
                labels=f[LABELS][()] if LABELS in f else None,
                class_counts=f.attrs[CLASS_COUNTS_ATTR].tolist() if CLASS_COUNTS_ATTR in f.attrs else None,
                skipped=read_skipped(f),
                attrs={k: v for k, v in f.attrs.items() if k not in (TARGET_ATTR, CLASSES_ATTR, CLASS_COUNTS_ATTR)},
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
    group.create_dataset(REASONS, data=np.array([r for _, r in skipped], dtype=object), dtype=PATH_DTYPE)


def read_skipped(f: h5py.File) -> list[tuple[str, str]]:
    if SKIPPED not in f:
        return []
    group = f[SKIPPED]
    return list(zip(group[PATHS].asstr()[()], group[REASONS].asstr()[()]))


def write_attrs(f: h5py.File, attrs: dict) -> None:
    f.attrs[VERSION_ATTR] = __version__
    for key, value in attrs.items():
        f.attrs[key] = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value
