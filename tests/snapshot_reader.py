"""A reader that reads a dataset over and over while reruns happen, and checks every row it reads.

    python -m tests.snapshot_reader KIND DATASET TRUTH STOP OUT

TRUTH is a JSON file: "path sha256" -> {"HxW": blake2b of the pixels, "label": class index,
"masks HxW": blake2b of the masks}, for every version of every image the test
will ever make. A row is good when its pixels are exactly those of the image
version its own ``paths`` and ``sha256`` entries name, in the snapshot the
reader opened, and its label (or masks) is that image's: rows, paths,
digests and targets aligned. The reader runs until
STOP exists, then writes OUT: rows read, bad rows (with the first few),
errors, the snapshots it saw, and passes where the snapshot it held was gone
from its folder. OUT.seen gets each snapshot's name as the reader first opens
it, the first one written before any row is read: the test waits on it.

KIND: ``h5py-hold`` (plain h5py, one open file throughout), ``dataset``
(H5ImageDataset and `imgshard info`, opened again for every pass), ``loader``
(one Loader, refreshed between epochs; ``loader-block`` the same in block order),
``batches`` (a new batches() each pass).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
import traceback

import h5py
import hdf5plugin  # noqa: F401  plain h5py reads lz4 and zstd rows once this is imported (README)
import numpy as np


def digest(row: np.ndarray) -> str:
    return hashlib.blake2b(np.ascontiguousarray(row).tobytes(), digest_size=12).hexdigest()


def label_of(path: str) -> int:
    """The class every version of ``path`` has: its index among the classes a, b, c."""
    return hashlib.blake2b(path.encode()).digest()[0] % 3


class Check:
    def __init__(self, truth_path: str, out: str):
        with open(truth_path) as f:
            self.truth = json.load(f)
        self.rows = self.bad = self.held_gone = 0
        self.examples: list[str] = []
        self.snapshots: list[str] = []
        self.seen = out + ".seen"
        self.any_version: dict | None = None

    def opened(self, snapshot: str) -> None:
        """The reader now reads ``snapshot`` (its name relative to the dataset's folder)."""
        if snapshot not in self.snapshots:
            self.snapshots.append(snapshot)
            with open(self.seen, "a") as f:
                f.write(snapshot + "\n")

    def valid(self, pixels: np.ndarray, target) -> None:
        """A row read without its listing: it must be some version of some image, at this size, with its label or masks."""
        shape = f"{pixels.shape[0]}x{pixels.shape[1]}"
        if self.any_version is None:
            self.any_version = {}
            for entry in self.truth.values():
                for size, d in entry.items():
                    if "x" in size and not size.startswith("masks"):
                        self.any_version.setdefault(size, {}).setdefault(d, set()).update({entry["label"], entry.get(f"masks {size}")})
        self.rows += 1
        targets = self.any_version.get(shape, {}).get(digest(pixels))
        if targets is None or _value(target) not in targets:
            self._bad("all zeros" if not pixels.any() else "pixels of no image version" if targets is None else "a target not its image's")

    def row(self, path: str, sha256: str, pixels: np.ndarray, target) -> None:
        self.rows += 1
        entry = self.truth.get(f"{path} {sha256}", {})
        size = f"{pixels.shape[0]}x{pixels.shape[1]}"
        want = entry.get(size)
        right = entry.get(f"masks {size}") if np.ndim(target) == 3 else entry.get("label")
        if want is None or want != digest(pixels) or _value(target) != right:
            zeros = not pixels.any()
            what = "all zeros" if zeros else "other pixels" if want != digest(pixels) else "a target not its image's"
            self._bad(f"{path} {sha256[:8]}: {what}" + ("" if want else " (no such version)"))

    def _bad(self, example: str) -> None:
        self.bad += 1
        if len(self.examples) < 5:
            self.examples.append(example)


def _value(target):
    """A label as its index, masks as their digest."""
    return digest(target) if np.ndim(target) == 3 else int(target)


def pause() -> None:
    """Between passes: the readers share the machine with the reruns they read through."""
    time.sleep(0.05)


def listing(f: h5py.File) -> tuple[list[str], list[str], np.ndarray | None]:
    return list(f["paths"].asstr()[()]), list(f["sha256"].asstr()[()]), f["labels"][()] if "labels" in f else None


def stored_target(f: h5py.File, labels: np.ndarray | None, i: int):
    """Row ``i``'s label, or its masks unpacked with plain numpy as the README's dataset table says."""
    if labels is not None:
        return int(labels[i])
    bits = f["mask_bits"]
    shape = tuple(int(x) for x in bits.attrs["mask_shape"])
    return np.unpackbits(bits[i], count=int(np.prod(shape)), bitorder="little").reshape(shape)


def h5py_hold(dataset: str, check: Check, stop: str) -> None:
    with h5py.File(dataset, "r") as f:
        name = f.attrs["snapshot"]
        held = os.fstat(f.id.get_vfd_handle()).st_ino
        check.opened(name)
        paths, sha256, labels = listing(f)
        images = f["images"]
        rng = np.random.default_rng(0)
        while not os.path.exists(stop):
            # The snapshot it holds must stay in its folder, under its own name, for as long as it holds it.
            try:
                gone = os.stat(os.path.join(os.path.dirname(dataset), name)).st_ino != held
            except FileNotFoundError:
                gone = True
            check.held_gone += gone
            for i in rng.permutation(len(paths)):
                check.row(paths[i], sha256[i], images[i], stored_target(f, labels, i))
            pause()


def dataset_reopened(dataset: str, check: Check, stop: str) -> None:
    from imgshard import H5ImageDataset
    from imgshard.tools.cli import info

    rng = np.random.default_rng(1)
    while not os.path.exists(stop):
        ds = H5ImageDataset(dataset)
        check.opened(ds.snapshot.attrs["snapshot"])
        with ds.snapshot.h5() as f:
            paths, sha256, _ = listing(f)
        assert len(paths) == len(ds)
        for i in rng.permutation(len(ds)):
            image, target = ds[int(i)]
            check.row(paths[i], sha256[i], image, target)
        ds.close()
        lines, problems = info(dataset)
        assert not problems, problems
        pause()


def loader_refreshed(dataset: str, check: Check, stop: str, shuffle=True) -> None:
    from imgshard import Loader

    # Blocks of 5 rows in block order: 40 rows make 8 of them, and the reads go block by block.
    with Loader(dataset, batch_size=7, seed=0, threads=2, shuffle=shuffle, block_bytes=5 * 120 * 160 * 3) as loader:
        epoch = 0
        while not os.path.exists(stop):
            loader.refresh()
            check.opened(loader.snapshot.attrs["snapshot"])
            with loader.snapshot.h5() as f:
                paths, sha256, _ = listing(f)
            loader.set_epoch(epoch)
            order = iter(_epoch_rows(loader))
            for images, targets in loader:
                for image, target in zip(images, targets):
                    i = next(order)
                    check.row(paths[i], sha256[i], image, target)
            epoch += 1
            pause()


def _epoch_rows(loader) -> list[int]:
    return loader._order.part(loader.seed, loader.epoch, loader.rank, loader.world_size, loader.drop_last).tolist()


def batches_each_pass(dataset: str, check: Check, stop: str) -> None:
    """batches() opens the dataset itself: each row must be a valid decode of some image version, never zeros,
    and its label (masks) that image's."""
    from imgshard import batches

    while not os.path.exists(stop):
        with h5py.File(dataset, "r") as f:  # the newest snapshot, as batches() is about to open it
            check.opened(f.attrs["snapshot"])
        for images, targets in batches(dataset, batch_size=5, shuffle=True):
            for image, target in zip(images, targets):
                check.valid(image, target)
        pause()


KINDS = {
    "h5py-hold": h5py_hold,
    "dataset": dataset_reopened,
    "loader": loader_refreshed,
    "loader-block": lambda dataset, check, stop: loader_refreshed(dataset, check, stop, shuffle="block"),
    "batches": batches_each_pass,
}


def main(kind: str, dataset: str, truth: str, stop: str, out: str) -> None:
    check = Check(truth, out)
    errors = []
    try:
        KINDS[kind](dataset, check, stop)
    except Exception:
        errors.append(traceback.format_exc())
    with open(out, "w") as f:
        json.dump({"rows": check.rows, "bad": check.bad, "examples": check.examples, "errors": errors, "snapshots": check.snapshots, "held_gone": check.held_gone}, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
