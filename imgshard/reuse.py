"""Step 3, decode: rows of unchanged images, taken from the shard's previous file instead of decoded again.

A rerun of a shard for one changed image then costs that image's decode and
a copy of the other rows' stored chunks, so shards can be few and large.

Snakemake deletes a job's outputs before it runs it, so each finished shard
file gets a second name, ``<stem>.shards/previous/shard-NNN.h5``: a hard link,
not a second copy on disk. A rerun opens it and copies the stored chunk of
every image whose row key is unchanged: its relative path, size and mtime (the
test that made Snakemake rerun the shard) and, with masks, its run-length
strings. The file as a whole must also have been built by the same imgshard
(version, and the source of the modules that make pixels) and OpenCV with
the same pixel settings. The link moves to a new file only once
that file is complete, so a crash or an interrupt leaves the previous one; as
every row is matched by its own key, an older file is still a correct source.

When only a few of the shard's images are new, changed or gone, the previous
file itself becomes the new one: it is renamed to the job's temporary name,
the new images are written into the rows that changed or left (zeros where
none came back) or appended, and the index is rewritten (``slots``: each
listed image's row). A rerun for one changed, added or removed image so
writes one image however large the shard, and the dataset still lists its
images in the order a fresh build would (the gather follows the slots). Rows
left empty are few (at most IN_PLACE_MAX_SHARE, else a fresh file is written),
and only uncompressed pixels are updated so (a rewritten compressed chunk
would leave the old one's space behind in the file). A failure midway loses the
previous file, never a correct row: the temporary file is removed, and the
next rerun decodes all.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

import cv2
import h5py
import numpy as np
import simplejpeg

from . import __version__
from .write import IMAGES, MASKS, ORIGINAL_SIZE, PATHS, ROW_KEYS, SHA256, read_slots

PREVIOUS = "previous"
# In place only while the new or changed images, and the rows left empty, are
# few: otherwise most of the file is rewritten anyway, and a fresh file keeps
# its rows in order on disk and wastes none.
IN_PLACE_MAX_SHARE = 0.25
FINGERPRINT = "reuse_fingerprint"  # attribute of a shard file: what its rows were made with


def previous_path(shard_path: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(shard_path)), PREVIOUS, os.path.basename(shard_path))


def row_key(relpath: str, size: int, mtime_ns: int, target: tuple | None) -> bytes:
    """What an image's row was made from: the file as the manifest saw it, and its masks' run-length strings."""
    h = hashlib.blake2b(repr((relpath, size, mtime_ns, target)).encode("utf-8"), digest_size=16)
    return h.hexdigest().encode("ascii")


def fingerprint(pixels: dict, labels) -> str:
    """Everything besides an image's own key that its stored row depends on."""
    masks = list(labels.classes) if labels is not None and labels.kind == "masks" else None
    return json.dumps(
        {"pixels": pixels, "masks": masks, "imgshard": __version__, "code": _pixel_code(), "opencv": cv2.__version__, "simplejpeg": simplejpeg.__version__},
        sort_keys=True,
    )


def _pixel_code() -> str:
    # The modules that turn a file into a row: an edit to one of them (the version
    # need not change) must not let a rerun copy rows its old code made.
    from . import decode, geometry, header, jpeg, labels

    h = hashlib.blake2b(digest_size=8)
    for module in (decode, geometry, header, jpeg, labels):
        with open(module.__file__, "rb") as f:
            h.update(f.read())
    return h.hexdigest()


class Previous:
    """The shard's previous file: its index read up front, its rows opened for copying only once the workers exist.

    (A file open before the fork would be open in every worker too, and HDF5's
    lock on it would outlive the parent's close.)
    """

    def __init__(self, path: str, f: h5py.File):
        self.path = path
        self.paths = f[PATHS].asstr()[()].tolist()
        self.sha256 = f[SHA256].asstr()[()]
        self.sizes = f[ORIGINAL_SIZE][()]
        self._rows = {key: row for row, key in enumerate(f[ROW_KEYS][()].tolist())}
        self.slots = read_slots(f)  # where each listed image's pixels are
        self.rows = f[IMAGES].shape[0]  # with the empty ones
        self._file = self.images = self.masks = None

    def row_of(self, key: bytes) -> int | None:
        return self._rows.get(key)

    def slots_in_place(self, old: list[int | None], compression: str) -> np.ndarray | None:
        """Each listed image's row if this file can become the new one in place; None if a fresh file is due.

        ``old``: each listed image's row in this file's list, None for a new or
        changed one. New ones take the rows of images that changed or left, in
        order, then rows appended at the end.
        """
        n = len(old)
        todo = sum(j is None for j in old)
        if compression != "none" or n == 0 or todo > IN_PLACE_MAX_SHARE * n:
            return None
        kept = {int(self.slots[j]) for j in old if j is not None}
        free = (row for row in range(self.rows) if row not in kept)
        slots = np.empty(n, np.int64)
        end = self.rows
        for i, j in enumerate(old):
            if j is not None:
                slots[i] = self.slots[j]
                continue
            row = next(free, None)
            if row is None:
                row, end = end, end + 1
            slots[i] = row
        if end - n > IN_PLACE_MAX_SHARE * end:
            return None
        return slots

    def open(self) -> None:
        self._file = h5py.File(self.path, "r")
        self.images = self._file[IMAGES]
        self.masks = self._file[MASKS] if MASKS in self._file else None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = self.images = self.masks = None


def open_previous(shard_path: str, expected: str) -> Previous | None:
    """The index of the previous file of ``shard_path`` if one was built with ``expected`` fingerprint; else None."""
    path = previous_path(shard_path)
    if not os.path.exists(path):
        return None
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get(FINGERPRINT) != expected or ROW_KEYS not in f:
                print(f"reuse: {path} was built with other settings; decoding every image", file=sys.stderr)
                return None
            return Previous(path, f)
    except (OSError, KeyError, ValueError) as e:
        print(f"reuse: {path} cannot be read ({e}); decoding every image", file=sys.stderr)
        return None


def keep(shard_path: str) -> None:
    """Give the finished ``shard_path`` its second name, replacing the previous one atomically."""
    path = previous_path(shard_path)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if os.path.exists(tmp):
            os.unlink(tmp)
        os.link(shard_path, tmp)
        os.replace(tmp, path)
    except OSError as e:  # no hard links here, or no room for the folder: no reuse, nothing else lost
        print(f"reuse: cannot link {shard_path} to {path} ({e.strerror}); its next rerun decodes every image", file=sys.stderr)
        if os.path.exists(tmp):
            os.unlink(tmp)
