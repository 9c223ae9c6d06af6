"""Plan, the shard manifests: what Snakemake tracks instead of every image file.

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

import errno
import os
import re
import time
from dataclasses import dataclass

from .probe import header_size
from ..temp import temp_name

# Coarser than the timestamps of every common filesystem but FAT's (2 s).
RACY_SECONDS = 1.0
# Header sizes are empty when the run does not need them, 0 0 when the header gives none.
_HEADER = "# imgshard manifest: path, size, mtime_ns, header height, width\n"


@dataclass(frozen=True)
class Entry:
    path: str  # relative to images_dir, /-separated
    size: int
    mtime_ns: int
    header: tuple[int, int] | None = None  # (height, width) from the file's header, when the run needed it and it has one


def stat_all(images_dir: str, relpaths: list[str]) -> dict[str, tuple[int, int]]:
    """(each image's (size, mtime_ns), taken when none of them is racy any more (see the module's docstring);
    the images that cannot be looked at, with why: a dangling symbolic link, a file gone since the scan)."""
    unreadable: dict[str, str] = {}

    def look(rel: str) -> tuple[int, int]:
        path = os.path.join(images_dir, rel)
        try:
            st = os.stat(path)
        except OSError as e:
            link = os.path.islink(path)
            unreadable[rel] = f"dangling symbolic link (to {os.readlink(path)!r})" if link and e.errno == errno.ENOENT else f"cannot read: {e.strerror}"
            return 0, 0
        return st.st_size, st.st_mtime_ns

    stats = {rel: look(rel) for rel in relpaths}
    for _ in range(3):  # files still being written keep moving; three looks are enough to trust what is left
        now_ns = time.time_ns()
        racy = [rel for rel, (_, mtime) in stats.items() if mtime > now_ns - RACY_SECONDS * 1e9]
        if not racy:
            break
        # Capped: a file dated in the future (clock skew) would otherwise hold the scan up.
        newest = max(stats[rel][1] for rel in racy)
        time.sleep(min(RACY_SECONDS, (newest - now_ns) / 1e9 + RACY_SECONDS))
        stats.update({rel: look(rel) for rel in racy})
    for rel in unreadable:
        del stats[rel]
    return stats, unreadable


def shard_text(images_dir: str, relpaths: list[str], stats: dict[str, tuple[int, int]], previous: str, headers: bool) -> str:
    """The manifest of a shard of ``relpaths``, as text.

    With ``headers``, each line carries the header's size; a line of ``previous``
    whose path, size and mtime still match is reused as it is, so only new or
    changed files have their header read. Text all the way: at a million
    images, objects per line cost more than the scan itself.
    """
    old = {}
    if headers and previous:
        old = {line.split("\t", 1)[0]: line for line in _lines(previous)}
    lines = [_HEADER]
    # One search of the whole list (almost no name needs escaping) instead of one per name.
    special = _SPECIAL.search("/".join(relpaths)) is not None
    for rel in relpaths:
        size, mtime = stats[rel]
        name = escape(rel) if special else rel
        start = f"{name}\t{size}\t{mtime}\t"
        if not headers:
            lines.append(start + "\t\n")
            continue
        line = old.get(name)
        if line is not None and line.startswith(start) and not line.endswith("\t"):
            lines.append(line + "\n")
            continue
        # 0x0: looked, and the header gives no size (TIFF): not looked at again while unchanged.
        h, w = header_size(os.path.join(images_dir, rel)) or (0, 0)
        lines.append(f"{start}{h}\t{w}\n")
    return "".join(lines)


def header_sizes(text: str):
    """(path, (height, width) or None) of each line of a manifest's text."""
    for line in _lines(text):
        path, _, _, h, w = line.split("\t")
        yield unescape(path), ((int(h), int(w)) if h and h != "0" else None)


# A file name may hold a tab or a line end (Linux allows both; scraped sets have them): escaped, one line per image.
_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}
_UNESCAPE = re.compile(r"\\(.)")
_SPECIAL = re.compile(r"[\\\t\n\r]")


def escape(path: str) -> str:
    return path.translate(str.maketrans(_ESCAPES)) if _SPECIAL.search(path) else path


def unescape(field: str) -> str:
    if "\\" not in field:
        return field
    return _UNESCAPE.sub(lambda m: {"t": "\t", "n": "\n", "r": "\r"}.get(m.group(1), m.group(1)), field)


def _lines(text: str) -> list[str]:
    """The entries of a manifest's text: split on line feeds only (splitlines would also split a name at \\u2028)."""
    return [line for line in text.split("\n")[1:] if line]


def read_text(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def render(items: list[Entry]) -> str:
    lines = [_HEADER]
    for e in items:
        h, w = e.header or ("", "")
        lines.append(f"{escape(e.path)}\t{e.size}\t{e.mtime_ns}\t{h}\t{w}\n")
    return "".join(lines)


def parse(text: str) -> list[Entry]:
    out = []
    for line in text.split("\n"):
        if not line or line.startswith("#"):
            continue
        path, size, mtime, h, w = line.split("\t")
        out.append(Entry(unescape(path), int(size), int(mtime), (int(h), int(w)) if h and h != "0" else None))
    return out


def read(path: str) -> list[Entry]:
    """The entries of manifest ``path``; none if it does not exist (yet)."""
    return parse(read_text(path))


def write_if_changed(path: str, text: str, previous: str | None = None) -> bool:
    """Write the manifest ``text`` unless the file already says exactly this; True if it was written.

    An unchanged manifest keeps its mtime, so its shard job does not rerun.
    ``previous``: the file's text, if the caller has read it already.
    """
    if (read_text(path) if previous is None else previous) == text:
        return False
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = temp_name(path)
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)  # readers see the old manifest or the new one, never half of one
    return True
