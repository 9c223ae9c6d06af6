"""Plan: which shard each image belongs to.

The shard is a hash of the relative path alone, never of the position in a list,
so adding or removing one image moves no other image and a rerun redoes only
the shards whose images changed.
"""

from __future__ import annotations

import hashlib


def shard_of(relpath: str, shards: int) -> int:
    # blake2b rather than hash(): Python salts str hashes per process.
    digest = hashlib.blake2b(relpath.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def assign(relpaths: list[str], shards: int) -> list[list[str]]:
    """Images of each shard, in the order given (discover sorts them)."""
    buckets: list[list[str]] = [[] for _ in range(shards)]
    for path in relpaths:
        buckets[shard_of(path, shards)].append(path)
    return buckets


def shard_name(index: int, shards: int) -> str:
    """Zero-padded so shard files sort in shard order."""
    return f"{index:0{max(3, len(str(shards - 1)))}d}"
