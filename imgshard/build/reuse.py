"""Build, step 1 of a shard job, plan: read the shard's previous index once, and decide what each listed image takes.

A rerun of a shard for one changed image then costs that image's decode and a
part file of one row, however large the shard: the other rows stay where they
are, in part files no one ever writes again (see part.py).

Snakemake deletes a job's outputs before it runs it, so each finished shard
index also gets a second name, ``<stem>.shards/previous/shard-NNN.h5`` (a hard
link, made by index.commit). A rerun reads it and keeps, for every image whose
row key is unchanged, the part and row that hold it. A row key is the image's
relative path, size and mtime (the test that made Snakemake rerun the shard)
and, with masks, its run-length strings. The index as a whole must also have
been built by the same imgshard (version, and the source of the modules that
make pixels: imgshard/pixels/), OpenCV and simplejpeg with the same pixel
settings. The link moves to a new index only once that index is complete, so
a crash or an interrupt leaves the previous one, and every part it names.

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

import hashlib
import json
import os
import sys
from dataclasses import dataclass

import cv2
import simplejpeg

from .. import __version__
from ..errors import ImgshardError
from ..format import FINGERPRINT_ATTR, FORMAT
from ..layout import previous_of
from .index import ShardIndex, read_index

SHARE = 0.25
MAX_DELTAS = 4


def row_key(relpath: str, size: int, mtime_ns: int, target: tuple | None) -> bytes:
    """What an image's row was made from: the file as the manifest saw it, and its masks' run-length strings."""
    h = hashlib.blake2b(repr((relpath, size, mtime_ns, target)).encode("utf-8"), digest_size=16)
    return h.hexdigest().encode("ascii")


def fingerprint(pixels: dict, labels) -> str:
    """Everything besides an image's own key that its stored row depends on."""
    masks = list(labels.classes) if labels is not None and labels.kind == "masks" else None
    return json.dumps(
        {"pixels": pixels, "masks": masks, "format": FORMAT, "imgshard": __version__, "code": pixel_code(), "opencv": cv2.__version__, "simplejpeg": simplejpeg.__version__},
        sort_keys=True,
    )


def pixel_code() -> str:
    """A digest of the modules that turn a file into a row (imgshard/pixels/): an edit to one of them
    (the version need not change) must not let a rerun keep rows its old code made."""
    folder = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "pixels")
    h = hashlib.blake2b(digest_size=8)
    for name in sorted(os.listdir(folder)):
        if name.endswith(".py"):
            with open(os.path.join(folder, name), "rb") as f:
                h.update(name.encode() + b"\0" + f.read())
    return h.hexdigest()


@dataclass(frozen=True)
class Plan:
    """What a shard job does with each listed image (its position in the list), and what it found before."""

    relpaths: list[str]  # the listed images
    old: list[tuple[int, int] | None]  # (part of the previous index, row) it stays at; None: in the new part
    todo: list[int]  # positions to decode, ascending
    new_part: list[int]  # positions the new part holds, in its row order (ascending): todo and copied ones
    kept_parts: list[int]  # parts of the previous index the new index still uses
    fresh: bool
    previous: ShardIndex | None  # the previous index, when its rows may be reused
    keys: list[bytes] | None  # each image's row key; None: reuse is off
    targets: list[tuple] | None  # each image's labels row
    masks: bool  # the shard stores masks
    attrs: dict  # the index's attributes (the fingerprint among them)
    added: int  # images new to the shard since its previous index, changed, gone from it
    changed: int
    removed: int
    previous_position: dict[bytes, int]  # where each image of the previous index is listed, by row key

    @property
    def copied(self) -> int:
        return len(self.new_part) - len(self.todo)

    @property
    def reusing(self) -> bool:
        """The index made from this plan becomes the next run's previous one."""
        return self.keys is not None

    def previous_ref(self, i: int) -> tuple[int, int, int]:
        """(part, row, position in the previous index) of image ``i``, whose key is unchanged."""
        j = self.previous_position[self.keys[i]]
        return int(self.previous.part[j]), int(self.previous.row[j]), j


def plan(job) -> Plan:
    """Read the previous index of ``job.index_path`` (once) and decide, for every listed image,
    whether it is decoded, copied into the new part, or left where it is."""
    n = len(job.relpaths)
    labels = job.labels
    masks = labels is not None and labels.kind == "masks"
    targets = [labels.rows[r] for r in job.relpaths] if labels is not None else None
    attrs = dict(job.attrs)
    if job.source_stats is None:
        return Plan(job.relpaths, [None] * n, list(range(n)), list(range(n)), [], True, None, None, targets, masks, attrs, n, 0, 0, {})
    keys = [
        row_key(rel, size, mtime, targets[i] if masks else None)
        for i, (rel, (size, mtime)) in enumerate(zip(job.relpaths, job.source_stats))
    ]
    attrs[FINGERPRINT_ATTR] = fingerprint(_pixel_settings(job.geometry, job.compression), labels)
    before = _read_previous(job.index_path)
    added, changed, removed = _changes(before, job.relpaths, keys)
    previous = before if before is not None and _usable(before, job.index_path, attrs[FINGERPRINT_ATTR]) else None
    old, todo, new_part, kept, fresh = _decide(previous, keys, n)
    positions = {key: j for j, key in enumerate(previous.row_keys)} if previous is not None else {}
    return Plan(job.relpaths, old, todo, new_part, kept, fresh, previous, keys, targets, masks, attrs, added, changed, removed, positions)


def _read_previous(index_path: str) -> ShardIndex | None:
    path = previous_of(index_path)
    if not os.path.exists(path):
        return None
    try:
        return read_index(path)
    except ImgshardError as e:
        print(f"reuse: {e}; decoding every image", file=sys.stderr)
        return None


def _usable(before: ShardIndex, index_path: str, expected: str) -> bool:
    """``before`` was built with the ``expected`` fingerprint and all its parts are there."""
    path = previous_of(index_path)
    if before.attrs.get(FINGERPRINT_ATTR) != expected or before.row_keys is None:
        print(f"reuse: {path} was built with other settings; decoding every image", file=sys.stderr)
        return False
    damaged = before.damaged_parts(os.path.dirname(os.path.dirname(path)))
    if damaged:
        print(f"reuse: {damaged[0]}, a part {path} names, is gone or damaged; decoding every image", file=sys.stderr)
        return False
    return True


def _changes(before: ShardIndex | None, relpaths: list[str], keys: list[bytes]) -> tuple[int, int, int]:
    """(added, changed, removed) images of the shard since its previous index, whatever its settings."""
    if before is None:
        return len(relpaths), 0, 0
    old = dict(zip(before.paths, before.row_keys or [None] * len(before.paths)))
    now = set(relpaths)
    added = sum(1 for p in relpaths if p not in old)
    changed = sum(1 for p, k in zip(relpaths, keys) if p in old and old[p] != k)
    return added, changed, sum(1 for p in old if p not in now)


def _decide(previous: ShardIndex | None, keys: list[bytes], n: int):
    """(old, todo, new_part, kept_parts, fresh) for ``n`` listed images with row ``keys``."""
    if previous is None:
        return [None] * n, list(range(n)), list(range(n)), [], True
    rows = {key: (int(p), int(r)) for key, p, r in zip(previous.row_keys, previous.part, previous.row)}
    found = [rows.get(key) for key in keys]
    todo = [i for i, ref in enumerate(found) if ref is None]
    live = n - len(todo)
    dead = sum(previous.part_rows) - live
    if len(todo) > SHARE * n or dead > SHARE * max(n, 1) or not previous.parts:
        # Fresh: every unchanged row copied into the one new part, in list order.
        return [None] * n, todo, list(range(n)), [], True
    deltas = set(range(1, len(previous.parts)))  # part 0 is the base a fresh part started
    merge = len(deltas) >= MAX_DELTAS
    old = [ref if ref is not None and not (merge and ref[0] in deltas) else None for ref in found]
    new_part = [i for i, ref in enumerate(old) if ref is None]
    kept = sorted({ref[0] for ref in old if ref is not None})
    return old, todo, new_part, kept, False


def _pixel_settings(geometry, compression: str) -> dict:
    # Not geometry.reference: which image set the size says nothing about any row.
    return {
        "shape": list(geometry.shape),
        "resize": geometry.resize,
        "pad_value": geometry.pad_value,
        "reducing_gap": geometry.reducing_gap,
        "compression": compression,
    }
