"""A reader that reads a dataset over and over while reruns happen, and checks every row it reads.

    python -m tests.snapshot_reader KIND DATASET TRUTH STOP OUT

TRUTH is a JSON file: "path sha256" -> {"HxW": blake2b of the pixels}, for
every version of every image the test will ever make. A row is good when its
pixels are exactly those of the image version its own ``paths`` and
``sha256`` entries name, in the snapshot the reader opened: rows, paths and
digests aligned. The reader runs until STOP exists, then writes OUT:
rows read, bad rows (with the first few), errors, snapshots seen.

KIND: ``h5py-hold`` (plain h5py, one open file throughout), ``dataset``
(H5ImageDataset and `imgshard info`, opened again for every pass), ``loader``
(one Loader, refreshed between epochs), ``batches`` (a new batches() each pass).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import traceback

import h5py
import numpy as np


def digest(row: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(row).tobytes(), digest_size=12).hexdigest()


class Check:
    def __init__(self, truth_path: str):
        with open(truth_path) as f:
            self.truth = json.load(f)
        self.rows = self.bad = 0
        self.examples: list[str] = []
        self.snapshots: set = set()
        self.any_version: dict | None = None

    def valid(self, pixels: np.ndarray) -> None:
        """A row read without its listing: it must be some version of some image, at this size."""
        shape = f"{pixels.shape[0]}x{pixels.shape[1]}"
        if self.any_version is None:
            self.any_version = {}
            for sizes in self.truth.values():
                for size, d in sizes.items():
                    self.any_version.setdefault(size, set()).add(d)
        self.rows += 1
        if digest(pixels) not in self.any_version.get(shape, ()):
            self.bad += 1
            if len(self.examples) < 5:
                self.examples.append("all zeros" if not pixels.any() else "pixels of no image version")

    def row(self, path: str, sha256: str, pixels: np.ndarray) -> None:
        self.rows += 1
        want = self.truth.get(f"{path} {sha256}", {}).get(f"{pixels.shape[0]}x{pixels.shape[1]}")
        if want is None or want != digest(pixels):
            self.bad += 1
            if len(self.examples) < 5:
                zeros = not pixels.any()
                self.examples.append(f"{path} {sha256[:8]}: {'all zeros' if zeros else 'other pixels'}" + ("" if want else " (no such version)"))


def listing(f: h5py.File) -> tuple[list[str], list[str]]:
    return list(f["paths"].asstr()[()]), list(f["sha256"].asstr()[()])


def h5py_hold(dataset: str, check: Check, stop: str) -> None:
    with h5py.File(dataset, "r") as f:
        check.snapshots.add(os.fstat(f.id.get_vfd_handle()).st_ino)
        paths, sha256 = listing(f)
        images = f["images"]
        rng = np.random.default_rng(0)
        while not os.path.exists(stop):
            for i in rng.permutation(len(paths)):
                check.row(paths[i], sha256[i], images[i])
            time.sleep(0.05)


def dataset_reopened(dataset: str, check: Check, stop: str) -> None:
    from imgshard import H5ImageDataset
    from imgshard.cli import info

    rng = np.random.default_rng(1)
    while not os.path.exists(stop):
        ds = H5ImageDataset(dataset)
        check.snapshots.add(ds.snapshot.identity)
        with ds.snapshot.h5() as f:
            paths, sha256 = listing(f)
        assert len(paths) == len(ds)
        for i in rng.permutation(len(ds)):
            check.row(paths[i], sha256[i], ds[int(i)])
        ds.close()
        lines, problems = info(dataset)
        assert not problems, problems
        time.sleep(0.05)


def loader_refreshed(dataset: str, check: Check, stop: str) -> None:
    from imgshard import Loader

    with Loader(dataset, batch_size=7, seed=0, threads=2) as loader:
        epoch = 0
        while not os.path.exists(stop):
            loader.refresh()
            check.snapshots.add(loader.snapshot.identity)
            with loader.snapshot.h5() as f:
                paths, sha256 = listing(f)
            loader.set_epoch(epoch)
            order = iter(_epoch_rows(loader))
            for images, _ in loader:
                for image in images:
                    i = next(order)
                    check.row(paths[i], sha256[i], image)
            epoch += 1
            time.sleep(0.05)


def _epoch_rows(loader) -> list[int]:
    from imgshard.read.sampler import epoch_order

    return epoch_order(len(loader.snapshot), True, loader.seed, loader.epoch).tolist()


def batches_each_pass(dataset: str, check: Check, stop: str) -> None:
    """batches() opens the dataset itself: each row must be a valid decode of some image version, never zeros."""
    from imgshard import batches

    while not os.path.exists(stop):
        for images, _ in batches(dataset, batch_size=5, shuffle=True):
            for image in images:
                check.valid(image)
        time.sleep(0.05)


KINDS = {"h5py-hold": h5py_hold, "dataset": dataset_reopened, "loader": loader_refreshed, "batches": batches_each_pass}


def main(kind: str, dataset: str, truth: str, stop: str, out: str) -> None:
    check = Check(truth)
    errors = []
    try:
        KINDS[kind](dataset, check, stop)
    except Exception:
        errors.append(traceback.format_exc())
    with open(out, "w") as f:
        json.dump({"rows": check.rows, "bad": check.bad, "examples": check.examples, "errors": errors, "snapshots": len(check.snapshots)}, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
