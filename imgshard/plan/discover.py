"""Plan: which files are the images of the dataset.

Paths are returned relative to ``images_dir``, ``/``-separated and sorted, because
they are what the dataset stores, what the shard hash is computed on and what
decides the order of the dataset.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from ..errors import ImgshardError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp"})


def is_image_name(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def find_images(images_dir: str | os.PathLike, image_list: str | os.PathLike | None = None) -> list[str]:
    """Relative paths of the images under ``images_dir``, or of those named in ``image_list``."""
    root = Path(images_dir)
    if not root.is_dir():
        what = "is a file" if root.exists() else "does not exist"
        where = f" (relative paths resolve against snakemake's working directory, {os.getcwd()})" if not root.is_absolute() else ""
        raise ImgshardError(f"images_dir: {str(images_dir)!r} is not a folder: {str(root.absolute())!r} {what}{where}")
    paths = _read_list(root, Path(image_list)) if image_list else _scan(root)
    if not paths:
        source = f"image_list {str(image_list)!r}" if image_list else f"images_dir {str(images_dir)!r}"
        raise ImgshardError(
            f"{source}: no images found (extensions: {' '.join(sorted(IMAGE_EXTENSIONS))}, any case)"
        )
    return sorted(paths)


def _scan(root: Path) -> list[str]:
    # os.walk uses scandir, which avoids a stat per file: it matters at 100k files.
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel = os.path.relpath(dirpath, root)
        prefix = "" if rel == "." else PurePosixPath(Path(rel)).as_posix() + "/"
        found.extend(prefix + name for name in filenames if is_image_name(name))
    return found


def _read_list(root: Path, image_list: Path) -> list[str]:
    try:
        lines = image_list.read_text(encoding="utf-8-sig").splitlines()  # a byte-order mark, as Excel saves
    except OSError as e:
        raise ImgshardError(f"image_list: cannot read {str(image_list)!r}: {e.strerror}") from None
    seen: dict[str, int] = {}
    for lineno, line in enumerate(lines, 1):
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        where = f"image_list {str(image_list)!r} line {lineno}"
        rel = PurePosixPath(entry.replace(os.sep, "/"))
        if rel.is_absolute() or ".." in rel.parts:
            raise ImgshardError(f"{where}: {entry!r} must be a path relative to images_dir, inside it")
        key = rel.as_posix()
        if key in seen:
            raise ImgshardError(f"{where}: {entry!r} is listed already on line {seen[key]}")
        if not (root / key).is_file():
            raise ImgshardError(f"{where}: {str(root / key)!r} does not exist")
        seen[key] = lineno
    return list(seen)
