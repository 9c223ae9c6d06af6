"""Step 4, write: one shard's HDF5 file, and the index datasets every file carries.

A shard file is written under a temporary name and renamed only when complete,
so neither Snakemake nor the gather can ever see half of one.
"""

from __future__ import annotations

import glob
import json
import os

import h5py
import numpy as np
import psutil

from . import __version__

IMAGES = "images"
PATHS = "paths"
SHA256 = "sha256"
ORIGINAL_SIZE = "original_size"
SKIPPED = "skipped"  # group: paths and reasons of the images on_error: skip left out
MASKS = "masks"
LABELS = "labels"


def mask_compression(compression: str) -> dict:
    # 0/1 masks shrink tens of times even with lzf, for almost no CPU: never store them raw.
    return compression_args("lzf" if compression == "none" else compression)


def write_labels(f: h5py.File, values: list[int], classes) -> None:
    ds = f.create_dataset(LABELS, data=np.asarray(values, dtype=np.int64).reshape(-1))
    ds.attrs["classes"] = list(classes)

PATH_DTYPE = h5py.string_dtype("utf-8")
SHA256_DTYPE = h5py.string_dtype("ascii", 64)


def compression_args(compression: str) -> dict:
    return {"none": {}, "lzf": {"compression": "lzf"}, "gzip": {"compression": "gzip", "compression_opts": 4}}[
        compression
    ]


def temp_name(path: str) -> str:
    return f"{path}.tmp-{os.getpid()}"


def remove_stale_temps(path: str) -> None:
    """Remove temporary files of ``path`` left by processes that died before renaming them."""
    for tmp in glob.glob(glob.escape(path) + ".tmp-*"):
        pid = tmp.rsplit("-", 1)[-1]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            os.unlink(tmp)


def write_index(f: h5py.File, paths: list[str], sha256: list[str], sizes: np.ndarray) -> None:
    f.create_dataset(PATHS, data=np.array(paths, dtype=object), dtype=PATH_DTYPE)
    f.create_dataset(SHA256, data=np.array(sha256, dtype="S64"), dtype=SHA256_DTYPE)
    f.create_dataset(ORIGINAL_SIZE, data=np.asarray(sizes, dtype=np.int32).reshape(-1, 2))


def write_skipped(f: h5py.File, skipped: list[tuple[str, str]]) -> None:
    group = f.create_group(SKIPPED)
    group.create_dataset(PATHS, data=np.array([p for p, _ in skipped], dtype=object), dtype=PATH_DTYPE)
    group.create_dataset("reasons", data=np.array([r for _, r in skipped], dtype=object), dtype=PATH_DTYPE)


def read_skipped(f: h5py.File) -> list[tuple[str, str]]:
    group = f[SKIPPED]
    return list(zip(group[PATHS].asstr()[()], group["reasons"].asstr()[()]))


def read_index(f: h5py.File) -> tuple[list[str], list[str], np.ndarray]:
    return (
        list(f[PATHS].asstr()[()]),
        list(f[SHA256].asstr()[()]),
        f[ORIGINAL_SIZE][()],
    )


def write_attrs(f: h5py.File, attrs: dict) -> None:
    f.attrs["imgshard_version"] = __version__
    for key, value in attrs.items():
        f.attrs[key] = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value


class ShardWriter:
    """Appends decoded batches to ``images``; ``finish`` adds the index and makes the file visible."""

    def __init__(self, path: str, capacity: int, shape: tuple[int, int], compression: str, labels=None):
        self.path = path
        self.tmp = temp_name(path)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        remove_stale_temps(path)
        height, width = shape
        self._file = h5py.File(self.tmp, "w")
        # One chunk per image: readers fetch single images in random order.
        self.images = self._file.create_dataset(
            IMAGES,
            shape=(capacity, height, width, 3),
            maxshape=(None, height, width, 3),
            dtype=np.uint8,
            chunks=(1, height, width, 3),
            **compression_args(compression),
        )
        self.labels = labels
        self.masks = None
        if labels is not None and labels.kind == "masks":
            k = len(labels.classes)
            self.masks = self._file.create_dataset(
                MASKS,
                shape=(capacity, height, width, k),
                maxshape=(None, height, width, k),
                dtype=np.uint8,
                chunks=(1, height, width, k),
                **mask_compression(compression),
            )
            self.masks.attrs["classes"] = list(labels.classes)
        self.count = 0

    def write(self, buffer: np.ndarray, rows: int, masks: np.ndarray | None = None) -> None:
        """Append the first ``rows`` rows of ``buffer`` (and ``masks``), one write_direct call each."""
        if rows:
            self.images.write_direct(buffer, np.s_[0:rows], np.s_[self.count : self.count + rows])
            if self.masks is not None:
                self.masks.write_direct(masks, np.s_[0:rows], np.s_[self.count : self.count + rows])
            self.count += rows

    def finish(
        self,
        paths: list[str],
        sha256: list[str],
        sizes: np.ndarray,
        skipped: list[tuple[str, str]],
        attrs: dict,
        labels: list[int] | None = None,
    ) -> None:
        assert len(paths) == self.count, (len(paths), self.count)
        self.images.resize(self.count, axis=0)
        if self.masks is not None:
            self.masks.resize(self.count, axis=0)
        if self.labels is not None and self.labels.kind == "labels":
            write_labels(self._file, labels or [], self.labels.classes)
        write_index(self._file, paths, sha256, sizes)
        write_skipped(self._file, skipped)
        write_attrs(self._file, attrs)
        self._file.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if self._file:
            self._file.close()
        if os.path.exists(self.tmp):
            os.unlink(self.tmp)
