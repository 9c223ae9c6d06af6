"""Step 2, shard manifests: what Snakemake tracks instead of every image file.

A shard's manifest lists its images with their size and modification time (and
the header's size, where the run needs it). It is rewritten only when that
list changes, so a changed, added or removed image changes exactly one
manifest, and the shard job, whose input it is, reruns. Snakemake then tracks
a few hundred manifests, not a million images: its per-file bookkeeping, not
decoding, is what made large builds slow.

Two edits of one file within one tick of the filesystem's clock leave the same
mtime. So a file modified less than ``RACY_SECONDS`` before the scan is not
trusted yet (git calls such an entry racy): the scan waits until it is that
old and looks again. Any later edit then moves its mtime.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from .probe import header_size

# Coarser than the timestamps of every common filesystem but FAT's (2 s).
RACY_SECONDS = 1.0
_HEADER = "# imgshard manifest: path, size, mtime_ns, header height, width\n"


@dataclass(frozen=True)
class Entry:
    path: str  # relative to images_dir, /-separated
    size: int
    mtime_ns: int
    header: tuple[int, int] | None = None  # (height, width) from the file's header, when the run needs it


def stat_all(images_dir: str, relpaths: list[str]) -> dict[str, os.stat_result]:
    """Each image's stat, taken when none of them is racy any more (see the module's docstring)."""
    stats = {rel: os.stat(os.path.join(images_dir, rel)) for rel in relpaths}
    for _ in range(3):  # files still being written keep moving; three looks are enough to trust what is left
        now = time.time()
        racy = [rel for rel, s in stats.items() if s.st_mtime_ns / 1e9 > now - RACY_SECONDS]
        if not racy:
            break
        # Capped: a file dated in the future (clock skew) would otherwise hold the scan up.
        newest = max(stats[rel].st_mtime_ns for rel in racy) / 1e9
        time.sleep(min(RACY_SECONDS, newest + RACY_SECONDS - now))
        stats.update({rel: os.stat(os.path.join(images_dir, rel)) for rel in racy})
    return stats


def entries(
    images_dir: str, relpaths: list[str], stats: dict[str, os.stat_result], previous: dict[str, Entry], headers: bool
) -> list[Entry]:
    """Manifest entries of ``relpaths``; a header is read only for a file new or changed since ``previous``."""
    out = []
    for rel in relpaths:
        st = stats[rel]
        header = None
        if headers:
            old = previous.get(rel)
            if old is not None and (old.size, old.mtime_ns) == (st.st_size, st.st_mtime_ns) and old.header:
                header = old.header
            else:
                header = header_size(os.path.join(images_dir, rel))
        out.append(Entry(rel, st.st_size, st.st_mtime_ns, header))
    return out


def render(items: list[Entry]) -> str:
    lines = [_HEADER]
    for e in items:
        h, w = e.header or ("", "")
        lines.append(f"{e.path}\t{e.size}\t{e.mtime_ns}\t{h}\t{w}\n")
    return "".join(lines)


def parse(text: str) -> list[Entry]:
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        path, size, mtime, h, w = line.split("\t")
        out.append(Entry(path, int(size), int(mtime), (int(h), int(w)) if h else None))
    return out


def read(path: str) -> list[Entry]:
    """The entries of manifest ``path``; none if it does not exist (yet)."""
    try:
        with open(path, encoding="utf-8") as f:
            return parse(f.read())
    except FileNotFoundError:
        return []


def write_if_changed(path: str, items: list[Entry]) -> bool:
    """Write the manifest unless it already says exactly this; True if it was written.

    An unchanged manifest keeps its mtime, so its shard job does not rerun.
    """
    text = render(items)
    try:
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return False
    except FileNotFoundError:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)  # readers see the old manifest or the new one, never half of one
    return True
