"""Publish: a gathered dataset file becomes the snapshot readers open, and old snapshots go once no one holds them.

Every gather writes a new, immutable snapshot, ``<stem>.shards/snapshots/<id>.h5``,
and makes ``<stem>.h5`` a second name (a hard link) of it in one atomic
rename. A reader that opened ``<stem>.h5`` keeps the snapshot it opened for as
long as it holds it, whatever later runs do: the snapshot file is never
changed, nor are the part files it maps (build/part.py), and neither is removed
while it is held. A new open gets the newest complete snapshot. Snakemake
never deletes ``<stem>.h5`` before a gather (it is not the rule's declared
output), so there is no moment without one.

A superseded snapshot is *held* while any process holds it open, as far as
this machine can tell:
- HDF5 takes a shared ``flock`` on every file it opens (h5py does unless
  ``HDF5_USE_FILE_LOCKING=FALSE``), and imgshard's readers take one
  themselves: a snapshot on which an exclusive ``flock`` fails is held;
- ``/proc/*/fd``: a snapshot some process of this machine has open is held,
  locks or not.
Neither sees a process on another node of a cluster whose filesystem does
not share ``flock`` between nodes (NFS does; Lustre only when mounted with
``-o flock``): ``keep_snapshots`` keeps that many superseded snapshots
regardless. The part files any kept snapshot maps stay with it.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import uuid
from dataclasses import dataclass, field

import h5py

from ..errors import ImgshardError
from ..build.index import read_index
from ..format import IMAGES, MASK_BITS, MASKS, SNAPSHOT_ATTR
from ..layout import Layout
from ..temp import remove_stale_temps, temp_name


def new_snapshot(out_path: str) -> tuple[str, str]:
    """(path, its name relative to ``out_path``'s folder) for the next snapshot of ``out_path``."""
    folder = Layout(os.path.abspath(out_path)).snapshots_dir
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"{uuid.uuid4().hex[:12]}.h5")
    return path, os.path.relpath(path, os.path.dirname(os.path.abspath(out_path)))


def publish(snapshot: str, out_path: str) -> None:
    """Make ``out_path`` a second name of the finished ``snapshot``, in one step."""
    tmp = temp_name(out_path)
    try:
        os.link(snapshot, tmp)
    except OSError as e:
        raise ImgshardError(
            f"{out_path}: cannot make it a hard link of {snapshot} ({e.strerror}): imgshard publishes datasets as hard links,"
            " which this filesystem does not allow"
        ) from None
    os.replace(tmp, out_path)


def gather_and_publish(shard_indexes: list[str], out_path: str, shape: tuple[int, int], keep_snapshots: int = 0, **gather_args):
    """Gather the shards into a new snapshot, publish it as ``out_path``, collect what no one holds.

    Returns (what gather says, the snapshot's path, what was collected).
    """
    from .gather import gather

    snapshot, name = new_snapshot(out_path)
    tmp = temp_name(snapshot)
    attrs = {**gather_args.pop("attrs", {}), SNAPSHOT_ATTR: name}
    try:
        done = gather(shard_indexes, tmp, shape, attrs=attrs, mapped_from=os.path.dirname(os.path.abspath(out_path)), **gather_args)
        os.replace(tmp, snapshot)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    publish(snapshot, out_path)
    return done, snapshot, collect(out_path, keep_snapshots, set(done.parts))


def is_held(fd: int) -> bool:
    """True when another open file description holds a ``flock`` on this file."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    return False


def open_files() -> set[tuple[int, int]]:
    """(device, inode) of every file some other process of this machine has open (those /proc lets us see)."""
    found = set()
    me = str(os.getpid())
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or pid == me:
            continue
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            with contextlib.suppress(OSError):
                st = os.stat(f"/proc/{pid}/fd/{fd}")
                found.add((st.st_dev, st.st_ino))
    return found


@dataclass
class Collected:
    snapshots: list[str] = field(default_factory=list)  # removed
    parts: list[str] = field(default_factory=list)  # removed
    held: list[str] = field(default_factory=list)  # superseded snapshots kept because a reader holds them


def collect(out_path: str, keep_snapshots: int = 0, current_parts: set[str] | None = None, older_than: float | None = None) -> Collected:
    """Remove the superseded snapshots of ``out_path`` that no one holds, and the part files no kept
    snapshot nor shard index names; also temporary files of writers that died.

    ``current_parts``: the parts the shard indexes name (absolute), when the caller has read them.
    ``older_than``: only files last changed before this time (see ``tidy``).
    """
    layout = Layout(os.path.abspath(out_path))
    folder, snap_dir, parts_dir = layout.shards_dir, layout.snapshots_dir, layout.parts_dir
    for pattern in (os.path.join(glob.escape(snap_dir), "*"), os.path.join(glob.escape(parts_dir), "*"), glob.escape(out_path)):
        remove_stale_temps(pattern)
    done = Collected()
    try:
        current = os.stat(out_path)
    except FileNotFoundError:
        current = None
    snapshots = sorted(glob.glob(os.path.join(glob.escape(snap_dir), "*.h5")), key=_mtime, reverse=True)
    superseded = [s for s in snapshots if current is None or not _same(s, current)]
    candidates = [s for s in superseded[keep_snapshots:] if older_than is None or _mtime(s) < older_than]
    lsof = open_files() if candidates else set()
    for snapshot in candidates:
        try:
            fd = os.open(snapshot, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            if not is_held(fd):
                st = os.fstat(fd)
                if (st.st_dev, st.st_ino) not in lsof:
                    # Removed while this process holds the exclusive lock: a reader that opened it
                    # meanwhile waits for its shared lock, then sees it unlinked (read/snapshot.py).
                    os.unlink(snapshot)
                    done.snapshots.append(snapshot)
                    continue
            done.held.append(snapshot)
        finally:
            os.close(fd)  # releases the lock
    referenced = set(current_parts or ())
    for snapshot in snapshots:
        # The current snapshot maps what the indexes name; a kept older one may map parts no index names now.
        if snapshot not in done.snapshots and (current_parts is None or current is None or not _same(snapshot, current)):
            referenced |= _sources(snapshot, os.path.dirname(os.path.abspath(out_path)))
    indexes = glob.glob(layout.indexes_glob)
    previous = [p for p in glob.glob(layout.previous_glob) if not _linked(p, folder)]
    for index in (indexes if current_parts is None else []) + previous:
        try:
            referenced |= {os.path.join(folder, p) for p in read_index(index).parts}
        except ImgshardError:
            continue  # not an index (a file of an older imgshard): it names no part
    for part in glob.glob(os.path.join(glob.escape(parts_dir), "*.h5")):
        if os.path.abspath(part) not in referenced and (older_than is None or _mtime(part) < older_than):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(part)
                done.parts.append(part)
    return done


def tidy(out_path: str, keep_snapshots: int = 0) -> int:
    """At the end of a run in which no gather ran (a run that found nothing to do): the superseded
    snapshots that readers held at the last gather and have let go since, with the parts only they map;
    how many snapshots went. Only files older than the published snapshot are looked at: a newer one
    would belong to a run working in the same folder right now (a snapshot written but not yet
    published, a part renamed into place before its index names it)."""
    try:
        published = os.stat(out_path).st_mtime
    except FileNotFoundError:
        return 0
    if len(glob.glob(os.path.join(glob.escape(Layout(os.path.abspath(out_path)).snapshots_dir), "*.h5"))) <= 1 + keep_snapshots:
        return 0  # nothing superseded beyond what is kept: no look at /proc
    return len(collect(out_path, keep_snapshots, older_than=published).snapshots)


def _sources(snapshot: str, dataset_dir: str) -> set[str]:
    """The part files ``snapshot`` maps, absolute; none for a copied one."""
    try:
        with h5py.File(snapshot, "r") as f:
            sources = set()
            for name in (IMAGES, MASK_BITS, MASKS):
                if name in f and f[name].is_virtual:
                    sources |= {os.path.normpath(os.path.join(dataset_dir, vs.file_name)) for vs in f[name].virtual_sources()}
            return sources
    except OSError:
        return set()


def _linked(previous: str, folder: str) -> bool:
    """True when ``previous/shard-NNN.h5`` is the shard's current index itself (a second name): nothing new to read."""
    try:
        return os.path.samefile(previous, os.path.join(folder, os.path.basename(previous)))
    except FileNotFoundError:
        return False


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except FileNotFoundError:
        return 0.0


def _same(path: str, st: os.stat_result) -> bool:
    try:
        other = os.stat(path)
    except FileNotFoundError:
        return False
    return (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino)
