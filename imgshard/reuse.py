"""Step 3, decode (its plan): which rows a rerun shard takes from its parts as they are, and what it writes anew.

A rerun of a shard for one changed image then costs that image's decode and a
part file of one row, however large the shard: the other rows stay where they
are, in part files no one ever writes again (see write.py).

Snakemake deletes a job's outputs before it runs it, so each finished shard
index also gets a second name, ``<stem>.shards/previous/shard-NNN.h5`` (a hard
link). A rerun reads it and keeps, for every image whose row key is unchanged,
the part and row that hold it. A row key is the image's relative path, size
and mtime (the test that made Snakemake rerun the shard) and, with masks, its
run-length strings. The index as a whole must also have been built by the same
imgshard (version, and the source of the modules that make pixels), OpenCV
and simplejpeg with the same pixel settings. The link moves to a new index
only once that index is complete, so a crash or an interrupt leaves the
previous one, and every part it names.

What the new part holds (``Plan``):
- **a delta**: only the new and changed images, while they are few (at most
  ``SHARE`` of the shard) and the rows the shard's parts no longer use are
  few too. Deltas pile up, so once there are ``MAX_DELTAS`` of them the new one
  also takes the live rows of the others (a small copy), and they drop out;
- **a fresh part**: every image, in list order, the unchanged ones copied as
  stored (no decoding, no decompression), when many changed or too many rows
  of the old parts are dead (changed, removed, skipped). Waste stays below
  ``SHARE`` of the shard, and a fresh part keeps the rows in order on disk.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import sys
from dataclasses import dataclass

import cv2
import simplejpeg

from . import __version__
from .errors import ImgshardError
from .index import ShardIndex, read_index
from .temp import remove_stale_temps, temp_name

PREVIOUS = "previous"
SHARE = 0.25
MAX_DELTAS = 4
FINGERPRINT = "reuse_fingerprint"  # attribute of a shard index: what its rows were made with


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
    # need not change) must not let a rerun keep rows its old code made.
    from . import decode, geometry, header, jpeg, labels

    h = hashlib.blake2b(digest_size=8)
    for module in (decode, geometry, header, jpeg, labels):
        with open(module.__file__, "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def open_previous(shard_path: str, expected: str) -> ShardIndex | None:
    """The previous index of ``shard_path`` if it was built with the ``expected`` fingerprint and all its parts are there."""
    path = previous_path(shard_path)
    if not os.path.exists(path):
        return None
    try:
        index = read_index(path)
    except ImgshardError as e:
        print(f"reuse: {e}; decoding every image", file=sys.stderr)
        return None
    if index.attrs.get(FINGERPRINT) != expected or index.row_keys is None:
        print(f"reuse: {path} was built with other settings; decoding every image", file=sys.stderr)
        return None
    damaged = index.damaged_parts(os.path.dirname(os.path.dirname(path)))
    if damaged:
        print(f"reuse: {damaged[0]}, a part {path} names, is gone or damaged; decoding every image", file=sys.stderr)
        return None
    return index


def changes(shard_path: str, relpaths: list[str], keys: list[bytes] | None) -> tuple[int, int, int]:
    """(added, changed, removed) images of the shard since its previous index, whatever its settings."""
    path = previous_path(shard_path)
    try:
        before = read_index(path) if os.path.exists(path) else None
    except ImgshardError:
        before = None
    if before is None:
        return len(relpaths), 0, 0
    old = dict(zip(before.paths, before.row_keys or [None] * len(before.paths)))
    now = set(relpaths)
    added = sum(1 for p in relpaths if p not in old)
    changed = sum(1 for p, k in zip(relpaths, keys or [None] * len(relpaths)) if p in old and k is not None and old[p] != k)
    return added, changed, sum(1 for p in old if p not in now)


@dataclass
class Plan:
    """What a shard job does with each listed image (its position in the list)."""

    old: list[tuple[int, int] | None]  # (part of the previous index, row) it stays at; None: in the new part
    todo: list[int]  # positions to decode, ascending
    new_part: list[int]  # positions the new part holds, in its row order (ascending): todo and copied ones
    kept_parts: list[int]  # parts of the previous index the new index still uses
    fresh: bool

    @property
    def copied(self) -> int:
        return len(self.new_part) - len(self.todo)


def plan(previous: ShardIndex | None, keys: list[bytes] | None, n: int) -> Plan:
    """Decide, for ``n`` listed images with row ``keys``, what is decoded, copied into the new part, or left."""
    if previous is None or keys is None:
        return Plan([None] * n, list(range(n)), list(range(n)), [], True)
    rows = {key: (int(p), int(r)) for key, p, r in zip(previous.row_keys, previous.part, previous.row)}
    found = [rows.get(key) for key in keys]
    todo = [i for i, ref in enumerate(found) if ref is None]
    live = n - len(todo)
    dead = sum(previous.part_rows) - live
    if len(todo) > SHARE * n or dead > SHARE * max(n, 1) or not previous.parts:
        # Fresh: every unchanged row copied into the one new part, in list order.
        return Plan([None] * n, todo, list(range(n)), [], True)
    deltas = set(range(1, len(previous.parts)))  # part 0 is the base a fresh part started
    merge = len(deltas) >= MAX_DELTAS
    old = [ref if ref is not None and not (merge and ref[0] in deltas) else None for ref in found]
    new_part = [i for i, ref in enumerate(old) if ref is None]
    kept = sorted({ref[0] for ref in old if ref is not None})
    return Plan(old, todo, new_part, kept, False)


def keep(shard_path: str) -> None:
    """Give the finished ``shard_path`` its second name, replacing the previous one atomically."""
    path = previous_path(shard_path)
    tmp = temp_name(path)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        remove_stale_temps(glob.escape(path))
        if os.path.exists(tmp):
            os.unlink(tmp)
        os.link(shard_path, tmp)
        os.replace(tmp, path)
    except OSError as e:  # no hard links here, or no room for the folder: no reuse, nothing else lost
        print(f"reuse: cannot link {shard_path} to {path} ({e.strerror}); its next rerun decodes every image", file=sys.stderr)
        if os.path.exists(tmp):
            os.unlink(tmp)
