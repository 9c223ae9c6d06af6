"""Labels from a CSV file: segmentation masks (Kaggle "Understanding Clouds" format) or one class per image.

Two formats, told apart by the header:

- ``Image_Label,EncodedPixels``: each row is ``<image name>_<class>`` and a
  run-length encoding (pairs ``start length``, 1-based, pixels numbered top to
  bottom then left to right, i.e. column-major; empty means no mask). Classes
  are taken in first-seen order. Stored as ``masks`` (N, H, W, K) of 0/1.
- ``path,label``: one class name per image. Stored as ``labels`` (N,) int64;
  classes are the sorted label names.

Image names are paths relative to ``images_dir``, as the dataset stores them.

``labels: folders`` takes each image's class from its top-level folder under
``images_dir`` instead (``train/n01440764/*.JPEG``, as ImageNet and most
Kaggle sets come), the classes sorted by name as torchvision's
``ImageFolder`` sorts them, so class indices equal its ``class_to_idx``.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass


from ..errors import ImgshardError

CLOUDS_HEADER = ["Image_Label", "EncodedPixels"]
CLASSES_HEADER = ["path", "label"]


@dataclass(frozen=True)
class Labels:
    kind: str  # "masks" or "labels"
    classes: tuple[str, ...]
    rows: dict[str, tuple]  # relpath -> one RLE string per class (masks), or (class index,) (labels)

    def counts(self, relpaths: list[str]) -> list[int]:
        """Images of ``relpaths`` per class: with a non-empty mask of it, or labelled with it."""
        counts = [0] * len(self.classes)
        for rel in relpaths:
            row = self.rows[rel]
            if self.kind == "masks":
                for k, rle in enumerate(row):
                    counts[k] += bool(rle.strip())
            else:
                counts[row[0]] += 1
        return counts

    def digest(self, relpaths: list[str]) -> str:
        """Changes exactly when the labels of any of ``relpaths`` change."""
        h = hashlib.blake2b(repr((self.kind, self.classes)).encode(), digest_size=16)
        for rel in relpaths:
            h.update(repr((rel, self.rows.get(rel))).encode())
        return h.hexdigest()


def read_labels(path: str) -> Labels:
    try:
        # utf-8-sig: Excel's "CSV UTF-8" starts with a byte-order mark, invisible to whoever saved it.
        with open(path, newline="", encoding="utf-8-sig") as f:
            table = list(csv.reader(f))
    except OSError as e:
        raise ImgshardError(f"labels: cannot read {path!r}: {e.strerror}") from None
    if not table:
        raise ImgshardError(f"labels: {path!r} is empty")
    header = [h.strip() for h in table[0]]
    if header == CLOUDS_HEADER:
        return _clouds(path, table[1:])
    if header == CLASSES_HEADER:
        return _classes(path, table[1:])
    raise ImgshardError(
        f"labels: {path!r} line 1: header {','.join(header)!r} is neither"
        f" {','.join(CLOUDS_HEADER)!r} (masks) nor {','.join(CLASSES_HEADER)!r} (classes)"
    )


def _clouds(path: str, table: list[list[str]]) -> Labels:
    classes: list[str] = []
    found: dict[str, dict[str, str]] = {}
    for lineno, row in enumerate(table, 2):
        if not row:
            continue
        if len(row) != 2 or "_" not in row[0]:
            raise ImgshardError(f"labels: {path!r} line {lineno}: expected '<image>_<class>,<run-length encoding>'")
        image, cls = row[0].rsplit("_", 1)
        if cls not in classes:
            classes.append(cls)
        if cls in found.setdefault(image, {}):
            raise ImgshardError(f"labels: {path!r} line {lineno}: {image} has a second row for class {cls}")
        found[image][cls] = row[1].strip()
    rows = {image: tuple(masks.get(c, "") for c in classes) for image, masks in found.items()}
    return Labels("masks", tuple(classes), rows)


def _classes(path: str, table: list[list[str]]) -> Labels:
    names: dict[str, str] = {}
    for lineno, row in enumerate(table, 2):
        if not row:
            continue
        if len(row) != 2:
            raise ImgshardError(f"labels: {path!r} line {lineno}: expected 'path,label'")
        if row[0] in names:
            raise ImgshardError(f"labels: {path!r} line {lineno}: {row[0]} is listed already")
        names[row[0]] = row[1].strip()
    classes = tuple(sorted(set(names.values())))
    index = {c: i for i, c in enumerate(classes)}
    return Labels("labels", classes, {p: (index[c],) for p, c in names.items()})


def align(labels: Labels, relpaths: list[str], source: str, on_error: str) -> tuple[list[str], list[tuple[str, str]], list[str]]:
    """(images to build, images left out with their reason, warnings). Never a silent misalignment:

    an image with no row, or a row for an image that is not there, is an error,
    or with ``on_error: skip`` a left-out image or a warning.
    """
    present = set(relpaths)
    unknown = sorted(p for p in labels.rows if p not in present)
    unlabelled = [p for p in relpaths if p not in labels.rows]
    if on_error != "skip" and (unknown or unlabelled):
        parts = []
        if unlabelled:
            parts.append(f"{_count(len(unlabelled), 'image has', 'images have')} no row (first: {unlabelled[0]})")
        if unknown:
            parts.append(f"{_count(len(unknown), 'row names an image', 'rows name images')} not in images_dir (first: {unknown[0]})")
        raise ImgshardError(f"labels {source!r}: {'; '.join(parts)}; fix the CSV or set on_error: skip")
    warnings = [f"labels {source!r}: {_count(len(unknown), 'row names an image', 'rows name images')} not in images_dir (first: {unknown[0]})"] if unknown else []
    left_out = [(p, f"no row in labels {source}") for p in unlabelled]
    return [p for p in relpaths if p in labels.rows], left_out, warnings


FOLDERS = "folders"


def folder_classes(relpaths: list[str]) -> tuple[str, ...]:
    """The class names of ``labels: folders``: the top-level folders that hold images, sorted as ImageFolder sorts."""
    return tuple(sorted({rel.split("/", 1)[0] for rel in relpaths if "/" in rel}))


def folder_labels(relpaths: list[str], classes: list[str] | tuple[str, ...]) -> Labels:
    """Labels of the images in class folders (an image directly in images_dir has no row)."""
    index = {c: i for i, c in enumerate(classes)}
    rows = {rel: (index[rel.split("/", 1)[0]],) for rel in relpaths if "/" in rel and rel.split("/", 1)[0] in index}
    return Labels("labels", tuple(classes), rows)


def align_folders(labels: Labels, relpaths: list[str], images_dir: str, on_error: str) -> tuple[list[str], list[tuple[str, str]]]:
    """(images to build, images left out with their reason): an image directly in images_dir is in no class folder."""
    outside = [p for p in relpaths if p not in labels.rows]
    if outside and on_error != "skip":
        raise ImgshardError(
            f"labels: folders: {_count(len(outside), 'image is', 'images are')} directly in {images_dir}, in no class folder"
            f" (first: {outside[0]}); move them into one, or set on_error: skip"
        )
    return [p for p in relpaths if p in labels.rows], [(p, "in no class folder (labels: folders)") for p in outside]


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"
