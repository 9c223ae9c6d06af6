"""Shared-memory buffers in /dev/shm (SharedArray) that workers decode into.

Every segment is named ``imgshard-<tag>-s<shard>-p<pid>-b<k>`` (``-m<k>`` for masks, ``-f<k>`` for
flags; a DataLoader worker's batch ring is ``imgshard-ring-s<n>-p<pid>-...``): the tag keeps
runs in different working directories apart, the pid says which process owns
it, so a later run can tell a leftover of a hard-killed run (owner gone) from a
live segment of a concurrent one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import shutil

import numpy as np
import psutil
import SharedArray as sa

PREFIX = "imgshard"
SHM_DIR = "/dev/shm"
_OWNER = re.compile(rf"^{PREFIX}-.*-p(\d+)-[bmf]\d+$")


def segment_name(tag: str, shard: int, k: int, kind: str = "b") -> str:
    """``kind``: b for an image buffer, m for its mask buffer."""
    return f"{PREFIX}-{tag}-s{shard}-p{os.getpid()}-{kind}{k}"


def create(name: str, shape: tuple[int, ...], dtype=np.uint8, reserve: bool = False) -> np.ndarray:
    """A new segment; ``reserve`` allocates its pages now, so that the free space other jobs see is what is left."""
    array = sa.create(f"shm://{name}", shape, dtype=dtype)
    if reserve and array.nbytes:
        fd = os.open(os.path.join(SHM_DIR, name), os.O_RDWR)
        try:
            os.posix_fallocate(fd, 0, array.nbytes)
        except OSError as e:
            delete(name)
            if e.errno == errno.ENOSPC:
                raise MemoryError(f"/dev/shm is full: no room for {array.nbytes // 2**20} MB more") from None
            raise
        finally:
            os.close(fd)
    return array


def attach(name: str) -> np.ndarray:
    return sa.attach(f"shm://{name}")


def delete(name: str) -> None:
    try:
        sa.delete(f"shm://{name}")
    except FileNotFoundError:
        pass


def ours() -> list[str]:
    """Names of this project's segments now in /dev/shm."""
    try:
        return sorted(n for n in os.listdir(SHM_DIR) if _OWNER.match(n))
    except FileNotFoundError:
        return []


def remove_stale() -> list[str]:
    """Delete segments whose creating process is gone; return their names."""
    removed = []
    for name in ours():
        pid = int(_OWNER.match(name).group(1))
        if not psutil.pid_exists(pid):
            delete(name)
            removed.append(name)
    return removed


@contextlib.contextmanager
def reservation():
    """Held while a shard job sizes and creates its buffers: jobs side by side then each see the space
    the others took (their pages allocated), not the same free space twice."""
    fd = os.open(SHM_DIR, os.O_RDONLY)  # the folder itself: a lock that leaves no file behind
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def holders() -> int:
    """Other live shard jobs that hold buffers now (DataLoader workers' rings not counted)."""
    me = os.getpid()
    pids = {int(_OWNER.match(n).group(1)) for n in ours() if "-ring-" not in n}
    return sum(1 for pid in pids if pid != me and psutil.pid_exists(pid))


def free_bytes() -> int:
    """Free space in /dev/shm. Writing past it is a SIGBUS, not an exception, so check first."""
    return shutil.disk_usage(SHM_DIR).free
