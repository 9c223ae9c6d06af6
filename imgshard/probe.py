"""The image size a dataset of same-sized images has, read from one of them.

With ``image_size: null`` every image must decode to the same size; the first
image (in dataset order) that decodes sets it, and every shard job checks its
images against it.
"""

from __future__ import annotations

import os

import cv2

from .decode import FLAGS
from .errors import ImgshardError


def reference_shape(images_dir: str, relpaths: list[str]) -> tuple[int, int, str]:
    """(height, width, relpath) of the first decodable image."""
    for rel in relpaths:
        try:
            img = cv2.imread(os.path.join(images_dir, rel), FLAGS)
        except cv2.error:
            continue
        if img is not None and img.size:
            return int(img.shape[0]), int(img.shape[1]), rel
    raise ImgshardError(f"images_dir {images_dir!r}: none of its {len(relpaths)} images can be decoded")
