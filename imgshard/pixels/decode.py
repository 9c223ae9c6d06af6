"""Pixels: one image (and its masks) into its row, as a worker does it.

``decode_into`` reads the file once, hashes it, checks its header, and
decodes it straight into the row (or decodes it reduced, averages it over
whole blocks while it stays ``reducing_gap`` times the row, and resizes it
there: see geometry.py): a JPEG from the bytes it read (jpeg.py); anything else, and
a JPEG that path declines, with OpenCV. Every way it can fail comes back as a
reason string naming what is wrong; nothing here raises for a bad image.
"""

from __future__ import annotations

import hashlib
import io
import math
from typing import NamedTuple

import cv2
import numpy as np

from .geometry import Geometry, box_reduce, reduced_size
from .header import Header, problem, read_header
from .jpeg import jpeg_into
from .rle import rle_decode

FLAGS = cv2.IMREAD_COLOR_RGB


# Written to a row's first and last pixel before decoding into it. imread with
# ``dst`` returns ``dst`` untouched, with no error, when it cannot decode a
# file, and a decoder that fails partway leaves the last rows unwritten; a mark
# that survives is how either shows. A real image that happens to carry these
# exact values only costs one confirming decode, never a wrong result.
_MARK_FIRST = np.array([1, 254, 3], np.uint8)
_MARK_LAST = np.array([252, 5, 250], np.uint8)
# imread flags for a reduced-size RGB decode, by reduction factor.
_REDUCED = {
    1: FLAGS,
    2: cv2.IMREAD_REDUCED_GRAYSCALE_2 | cv2.IMREAD_COLOR_RGB,
    4: cv2.IMREAD_REDUCED_GRAYSCALE_4 | cv2.IMREAD_COLOR_RGB,
    8: cv2.IMREAD_REDUCED_GRAYSCALE_8 | cv2.IMREAD_COLOR_RGB,
}

# A reduced or resized decode lands in the first before its resize into the row,
# its block averages in the second; one pair per process, grown to the largest
# image it has met.
_scratch_memory = [np.empty(0, np.uint8), np.empty(0, np.uint8)]

class Outcome(NamedTuple):
    sha256: str | None
    size: tuple[int, int] | None  # original (height, width)
    error: str | None
    alpha: bool = False  # the file had an alpha channel, which the RGB row leaves out


def decode_into(path: str, out: np.ndarray, geometry: Geometry) -> Outcome:
    """Decode ``path`` into the row ``out`` as ``geometry`` says; report its digest, size, any error, and
    whether an alpha channel was left out (the row is RGB, as ``cv2.imread(path, IMREAD_COLOR_RGB)`` gives)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return Outcome(None, None, f"cannot read: {e.strerror}")
    digest = hashlib.sha256(data).hexdigest()
    if not data:
        return Outcome(digest, None, "empty file (0 bytes)")
    header = read_header(io.BytesIO(data))
    why = problem(data, header)
    if why:
        return Outcome(digest, header.size, why)
    decode = _decode_direct if geometry.resize is None else _decode_resized
    size, error = decode(path, data, header, out, geometry)
    return Outcome(digest, size, error, header.alpha and error is None)


def _decode_direct(path: str, data: bytes, header: Header, out: np.ndarray, geometry: Geometry) -> tuple[tuple[int, int] | None, str | None]:
    if jpeg_into(data, header, out, 1) or _imread_into(path, out, FLAGS):
        return geometry.shape, None
    # Decode on its own: None means undecodable; a rotated image that fits is copied in.
    img, error = _imread(path, FLAGS)
    if error:
        return None, error
    size = (int(img.shape[0]), int(img.shape[1]))
    if size != geometry.shape:
        return size, _size_error(size, geometry)
    out[...] = img
    return size, None


def _decode_resized(path: str, data: bytes, header: Header, out: np.ndarray, geometry: Geometry) -> tuple[tuple[int, int] | None, str | None]:
    factor = geometry.reduction(header.size) if header.kind == "jpeg" and header.size else 1
    if header.size:
        # Decode into this process's scratch array: a fresh array for every
        # image cost 2.5 ms of a 1/2-scale Clouds decode of 8 (page faults).
        scratch = _scratch((*reduced_size(header.size, factor), 3))
        if jpeg_into(data, header, scratch, factor) or _imread_into(path, scratch, _REDUCED[factor]):
            _place(scratch, out, header.size, geometry)
            return header.size, None
    img, error = _imread(path, _REDUCED[factor])
    if error:
        return None, error
    original = header.size if factor > 1 else (int(img.shape[0]), int(img.shape[1]))
    if factor > 1 and img.shape[:2] != reduced_size(original, factor):
        # The header was misread (an orientation cv2 sees differently, say): decode in full.
        factor, (img, error) = 1, _imread(path, FLAGS)
        if error:
            return None, error
        original = (int(img.shape[0]), int(img.shape[1]))
    _place(img, out, original, geometry)
    return original, None


def _place(src: np.ndarray, out: np.ndarray, original: tuple[int, int], geometry: Geometry) -> None:
    """Resize a decode of an image of ``original`` size into its row, through block averages when they keep the gap."""
    k = geometry.box_factor(src.shape[:2])
    if k > 1:
        src = box_reduce(src, k, _scratch((*reduced_size(src.shape[:2], k), src.shape[2]), 1))
    geometry.place(src, out, original)


def _imread_into(path: str, dst: np.ndarray, flags: int) -> bool:
    """Decode ``path`` straight into ``dst``; False when that did not fill it, and the caller decodes on its own."""
    dst[0, 0] = _MARK_FIRST
    dst[-1, -1] = _MARK_LAST
    try:
        img = cv2.imread(path, dst, flags)
    except cv2.error:
        # OpenCV 5 refuses a ``dst`` of another shape than the file's stored
        # size: an EXIF-rotated image, or one of another size.
        return False
    return (
        img is not None
        and np.shares_memory(img, dst)
        and not (dst[0, 0] == _MARK_FIRST).all()
        and not (dst[-1, -1] == _MARK_LAST).all()
    )


def _scratch(shape: tuple[int, int, int], which: int = 0) -> np.ndarray:
    """A C-contiguous array of ``shape``, reusing this process's scratch memory ``which``."""
    n = math.prod(shape)
    if _scratch_memory[which].size < n:
        _scratch_memory[which] = np.empty(n, np.uint8)
    return _scratch_memory[which][:n].reshape(shape)


def _imread(path: str, flags: int) -> tuple[np.ndarray | None, str | None]:
    try:
        img = cv2.imread(path, flags)
    except cv2.error as e:
        return None, f"OpenCV cannot decode it ({_first_line(e)})"
    if img is None or img.size == 0:
        return None, "not a decodable image"
    return img, None


def _size_error(size: tuple[int, int], geometry: Geometry) -> str:
    ref = f"{geometry.reference}'s " if geometry.reference else "the dataset's "
    return (
        f"size {size[0]}x{size[1]} differs from {ref}{geometry.height}x{geometry.width};"
        " set image_size: [height, width] to resize images of different sizes"
    )


def _first_line(e: Exception) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else type(e).__name__


def place_masks(rles: tuple[str, ...], original: tuple[int, int], out: np.ndarray, geometry: Geometry) -> str | None:
    """Decode one image's run-length masks at its original size into ``out`` (H, W, K), as its pixels were placed."""
    try:
        masks = np.stack([rle_decode(rle, *original) for rle in rles], axis=-1)
    except ValueError as e:
        return f"labels: {e}"
    if geometry.resize is None:
        out[...] = masks
    else:
        geometry.place(masks, out, original, interpolation=cv2.INTER_NEAREST, fill=0)
    return None
