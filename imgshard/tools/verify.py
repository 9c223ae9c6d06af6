"""Tools, verify: does the dataset still match its sources?

Re-reads every source file: its sha256 must match the dataset's, and decoding
it again (with the dataset's own size and resize settings) must give the
stored pixels. Also reports images that are gone from the folder and images
the dataset does not hold. Decoding is spread over worker processes.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import h5py
import numpy as np

from ..pixels.decode import decode_into
from ..build.workers import mp_context
from ..errors import ImgshardError
from ..pixels.geometry import Geometry
from ..publish.gather import skipped_of
from ..build.index import read_listing
from ..format import CONFIG_ATTR, IMAGES
from ..read import Snapshot


@dataclass
class Report:
    checked: int = 0
    missing: list[str] = field(default_factory=list)  # in the dataset, gone from the folder
    extra: list[str] = field(default_factory=list)  # in the folder, not in the dataset (nor skipped)
    changed: list[str] = field(default_factory=list)  # bytes differ from the recorded sha256
    pixels: list[str] = field(default_factory=list)  # same bytes, different pixels
    errors: list[str] = field(default_factory=list)  # cannot be decoded any more

    @property
    def problems(self) -> int:
        return sum(len(v) for v in (self.missing, self.extra, self.changed, self.pixels, self.errors))

    def lines(self) -> list[str]:
        out = [f"missing: {p}" for p in self.missing] + [f"extra: {p}" for p in self.extra]
        out += [f"changed: {p} (sha256 differs)" for p in self.changed]
        out += [f"pixels: {p} (decodes to other pixels than stored)" for p in self.pixels]
        return out + [f"error: {e}" for e in self.errors]

    def failure(self, dataset: str, images_dir: str) -> str:
        listing = "\n".join(self.lines())
        return f"verify: {dataset} does not match {images_dir}: {self.problems} problems\n{listing}"


def stored_geometry(f: h5py.File) -> Geometry:
    """The geometry the dataset was built with, from its own attributes."""
    height, width = f[IMAGES].shape[1:3]
    config = json.loads(f.attrs.get(CONFIG_ATTR, "{}"))
    resize = None if config.get("image_size") is None else config.get("resize", "stretch")
    # Datasets built before reducing_gap existed reduced as far as the box allowed: a gap of 1.
    gap = config.get("reducing_gap", 1.0)
    return Geometry(int(height), int(width), resize=resize, pad_value=int(config.get("pad_value", 0)), reducing_gap=gap)


# Worker side: the snapshot the parent opened, and the geometry it was built with, given once per process.
_state: dict = {}


def _start(snapshot: Snapshot, geometry: Geometry) -> None:
    _state.update(snapshot=snapshot, geometry=geometry)


def _check(images_dir: str, index: int, rel: str, sha256: str) -> tuple[str, str | None]:
    snapshot, geometry = _state["snapshot"], _state["geometry"]
    row = np.empty((geometry.height, geometry.width, 3), np.uint8)
    digest, _, error, _ = decode_into(os.path.join(images_dir, rel), row, geometry)
    if digest != sha256:
        return "changed", rel
    if error:
        return "errors", f"{rel}: {error}"
    stored = np.empty_like(row)
    snapshot.read_images([index], [memoryview(stored).cast("B")], stored[None])
    if not np.array_equal(row, stored):
        return "pixels", rel
    return "ok", None


def verify(dataset: str, images_dir: str, current: list[str], workers: int = 1) -> Report:
    """Compare ``dataset`` with the images now in ``images_dir`` (``current``: their relative paths)."""
    # Every part file of a virtual dataset there and whole, or a one-line error; and one snapshot
    # for every worker, whatever a rerun publishes meanwhile.
    snapshot = Snapshot(dataset)
    try:
        with snapshot.h5() as f:
            paths, sha256, _ = read_listing(f)
            skipped = {p for p, _ in skipped_of(f)}
            geometry = stored_geometry(f)
        report = Report()
        now = set(current)
        report.missing = [p for p in paths if p not in now]
        held = set(paths) | skipped
        report.extra = sorted(p for p in current if p not in held)
        todo = [(i, p, s) for i, (p, s) in enumerate(zip(paths, sha256)) if p in now]
        pool = ProcessPoolExecutor(max(1, workers), mp_context=mp_context("forkserver"), initializer=_start, initargs=(snapshot, geometry))
        with pool:
            futures = [pool.submit(_check, images_dir, i, p, s) for i, p, s in todo]
            for fut in futures:
                kind, what = fut.result()
                if kind != "ok":
                    getattr(report, kind).append(what)
        report.checked = len(todo)
        return report
    finally:
        snapshot.close()


def verify_or_fail(dataset: str, images_dir: str, current: list[str], workers: int = 1) -> Report:
    report = verify(dataset, images_dir, current, workers)
    if report.problems:
        raise ImgshardError(report.failure(dataset, images_dir))
    return report
