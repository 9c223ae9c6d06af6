"""Disk space: stop before decoding when the output's filesystem clearly cannot hold the datasets.

A full disk found midway costs a long run and leaves the user a traceback;
one ``statvfs`` at the start costs nothing. The estimate is the uncompressed
size (images and masks), so compressed output may need much less: the check
can be turned off with ``check_disk_space: false``.
"""

from __future__ import annotations

import glob
import os
import shutil
from collections.abc import Iterable

from ..errors import ImgshardError


def human(n: float) -> str:
    """Bytes as a short decimal size: 12.3 GB, 41.9 MB."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n / 1e3:.1f} kB"


def existing_folder(path: str) -> str:
    """``path``'s folder, or its nearest ancestor that exists (outputs' folders are made later)."""
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.isdir(folder):
        folder = os.path.dirname(folder)
    return folder


def reclaimable_bytes(dataset) -> int:
    """What a rebuild replaces: the dataset's part files and the dataset itself, if present (a rerun
    that keeps rows writes about nothing; old parts a reader still holds stay a while longer)."""
    files = glob.glob(os.path.join(glob.escape(dataset.layout.parts_dir), "*.h5")) + [dataset.output]
    return sum(os.path.getsize(f) for f in files if os.path.isfile(f))


def needed_bytes(dataset) -> int:
    """What building ``dataset`` may write beyond what it replaces: its pixels uncompressed, twice with
    ``gather: copy`` (the parts and the copy), less the part files and dataset already there."""
    copies = 2 if dataset.settings["gather"] == "copy" else 1
    return len(dataset.images) * dataset.row_bytes * copies - reclaimable_bytes(dataset)


def check_free_space(datasets: Iterable) -> None:
    """Raise naming the output folder when its filesystem has less free than the datasets need."""
    by_device: dict[int, list] = {}
    for ds in datasets:
        by_device.setdefault(os.stat(existing_folder(ds.output)).st_dev, []).append(ds)
    for group in by_device.values():
        need = sum(needed_bytes(ds) for ds in group)
        folder = existing_folder(group[0].output)
        free = shutil.disk_usage(folder).free
        if need > free:
            shown = os.path.join(os.path.dirname(group[0].output), "")  # as the config names it
            raise ImgshardError(
                f"{shown}: needs about {human(need)}, {human(free)} free"
                " (uncompressed; with compression set it may need less: check_disk_space: false builds anyway)"
            )
