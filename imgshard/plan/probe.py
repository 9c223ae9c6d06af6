"""The size every image must have when ``image_size`` is null, checked before anything is decoded.

Headers are read, not decoded, and only for files new or changed since the
last run: the shard manifests keep the size each header gave. Formats whose
header gives no size (TIFF) are checked by the shard jobs as they decode.
"""

from __future__ import annotations

import os

import cv2

from ..pixels.decode import FLAGS
from ..errors import ImgshardError
from ..pixels.header import MAX_PIXELS, header_of


class CommonSize:
    """The size every image must have, learnt from header sizes fed one at a time.

    ``add`` raises at the first image whose size differs, naming it and the one that set the size.
    """

    def __init__(self, images_dir: str):
        self.images_dir = images_dir
        self.reference: tuple[tuple[int, int], str] | None = None
        self.first: str | None = None

    def add(self, rel: str, size: tuple[int, int] | None) -> None:
        self.first = self.first or rel
        if size is None:
            return
        if self.reference is None:
            self.reference = (size, rel)
        elif size != self.reference[0]:
            (ref_size, ref) = self.reference
            raise ImgshardError(
                f"image_size is null but images differ in size: {ref} is {ref_size[0]}x{ref_size[1]},"
                f" {rel} is {size[0]}x{size[1]}; set image_size: [height, width] to resize them"
            )

    def result(self, relpaths: list[str]) -> tuple[int, int, str]:
        """(height, width, relpath of the image that set it); decodes when no header gave a size."""
        if self.reference is not None:
            return (*self.reference[0], self.reference[1])
        return _decoded_size(self.images_dir, relpaths)


def header_size(path: str) -> tuple[int, int] | None:
    """(height, width) as the header gives it, or None: no size there, an impossible one, or unreadable."""
    try:
        size = header_of(path).size
    except OSError:
        return None  # unreadable: its shard job reports it
    if size is None or not 0 < size[0] * size[1] <= MAX_PIXELS:
        return None  # an impossible size is a broken file, for its shard job to report
    return size


def _decoded_size(images_dir: str, relpaths: list[str]) -> tuple[int, int, str]:
    for rel in relpaths:
        try:
            img = cv2.imread(os.path.join(images_dir, rel), FLAGS)
        except cv2.error:
            continue
        if img is not None and img.size:
            return int(img.shape[0]), int(img.shape[1]), rel
    raise ImgshardError(f"images_dir {images_dir!r}: none of its {len(relpaths)} images can be decoded")
