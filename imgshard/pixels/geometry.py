"""How a decoded image becomes a row of the dataset: its target size and the way it gets there.

Every box is computed from the image's original size, never from the size it
was decoded at, so a reduced-size decode lands in exactly the same place as a
full one, and a mask resized with nearest-neighbour lines up with its image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

RESIZE_MODES = ("stretch", "letterbox", "center_crop")
REDUCTIONS = (8, 4, 2)


@dataclass(frozen=True)
class Geometry:
    height: int
    width: int
    resize: str | None = None  # None: images are stored as decoded and must all be height x width
    pad_value: int = 0
    # Decode a JPEG at 1/2, 1/4 or 1/8, and average any decode over whole blocks
    # of pixels, only while the result stays at least this many times the box
    # (Pillow's ``reducing_gap``, its draft() and reduce()): reducing right down
    # to the box leaves the final resize too little to average, and costs
    # detail. None: never reduce.
    reducing_gap: float | None = 2.0
    reference: str = ""  # with resize None: the image that set the size, for error messages

    @property
    def shape(self) -> tuple[int, int]:
        return self.height, self.width

    def scales(self, size: tuple[int, int]) -> tuple[float, float]:
        """(vertical, horizontal) scale from an image of ``size`` to its box in the row."""
        sy, sx = self.height / size[0], self.width / size[1]
        if self.resize == "letterbox":
            return (min(sy, sx),) * 2
        if self.resize == "center_crop":
            return (max(sy, sx),) * 2
        return sy, sx

    def reduction(self, size: tuple[int, int]) -> int:
        """The largest JPEG DCT reduction (8, 4, 2) that leaves at least ``reducing_gap`` times the box's pixels; 1 for none."""
        if self.reducing_gap is None:
            return 1
        sy, sx = self.scales(size)
        gap = self.reducing_gap
        return next((f for f in REDUCTIONS if sy * gap <= 1 / f and sx * gap <= 1 / f), 1)

    def box_factor(self, size: tuple[int, int]) -> int:
        """The largest whole blocks to average an image of ``size`` over, before its resize, that leave at least twice ``reducing_gap`` times the box.

        Twice: a block average is a blunter filter than a JPEG's scaled decode.
        At the gap itself, 4096x4096 WebPs resized to 384x512 ended 1.1 grey
        levels from a resize of the full decode, 2.1 at 224x224; at twice the
        gap, 0.16 and 0.19. One factor for both axes: a factor per axis measured
        both slower and further off.
        """
        if self.reducing_gap is None:
            return 1
        sy, sx = self.scales(size)
        return max(1, math.floor(1 / (max(sy, sx) * 2 * self.reducing_gap)))

    def place(
        self,
        src: np.ndarray,
        out: np.ndarray,
        original: tuple[int, int],
        interpolation: int | None = None,
        fill: int | None = None,
    ) -> None:
        """Resize ``src`` (a decode of an image of ``original`` size, maybe reduced) into ``out``.

        Masks pass ``cv2.INTER_NEAREST`` and ``fill=0`` and land exactly where their image does.
        """
        h0, w0 = original
        rh, rw = src.shape[0] / h0, src.shape[1] / w0  # src pixels per original pixel
        sy, sx = self.scales(original)
        if self.resize == "letterbox":
            bh, bw = min(self.height, max(1, round(h0 * sy))), min(self.width, max(1, round(w0 * sx)))
            y0, x0 = (self.height - bh) // 2, (self.width - bw) // 2
            out[...] = self.pad_value if fill is None else fill
            out[y0 : y0 + bh, x0 : x0 + bw] = _resize(src, bh, bw, interpolation).reshape(bh, bw, -1)
            return
        if self.resize == "center_crop":
            ch, cw = self.height / sy, self.width / sx  # the crop, in original pixels
            y0, x0 = round((h0 - ch) / 2 * rh), round((w0 - cw) / 2 * rw)
            src = src[y0 : y0 + max(1, round(ch * rh)), x0 : x0 + max(1, round(cw * rw))]
        resized = _resize(src, self.height, self.width, interpolation, dst=out)
        if not np.shares_memory(resized, out):
            out[...] = resized.reshape(out.shape)


def _resize(src: np.ndarray, height: int, width: int, interpolation: int | None, dst: np.ndarray | None = None):
    if interpolation is None:
        shrinking = height <= src.shape[0] and width <= src.shape[1]
        interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    if src.shape[:2] == (height, width):
        return src
    return cv2.resize(src, (width, height), dst=dst, interpolation=interpolation)


def box_reduce(src: np.ndarray, k: int, dst: np.ndarray) -> np.ndarray:
    """Average ``src`` over blocks of ``k`` x ``k`` pixels into ``dst``, of size ``reduced_size(src's, k)``.

    OpenCV's INTER_AREA takes a fast path when both scales are whole numbers:
    6 ms to average a 4096x4096 WebP over 2x2 blocks, then 11 ms to 384x512,
    against 44 ms straight there. Blocks cut short by the bottom and right
    edges average what they hold, as Pillow's reduce() and a scaled JPEG
    decode do.
    """
    h, w = src.shape[:2]
    hk, wk = h // k, w // k  # whole blocks
    for rows, cols, (bh, bw) in (
        (slice(0, hk * k), slice(0, wk * k), (hk, wk)),
        (slice(hk * k, h), slice(0, wk * k), (1, wk)),
        (slice(0, hk * k), slice(wk * k, w), (hk, 1)),
        (slice(hk * k, h), slice(wk * k, w), (1, 1)),
    ):
        block = src[rows, cols]
        if block.size:
            target = dst[rows.start // k : rows.start // k + bh, cols.start // k : cols.start // k + bw]
            target[...] = cv2.resize(block, (bw, bh), interpolation=cv2.INTER_AREA).reshape(target.shape)
    return dst


def reduced_size(size: tuple[int, int], factor: int) -> tuple[int, int]:
    """The size libjpeg decodes an image of ``size`` to at 1/``factor`` scale, and ``box_reduce`` averages it to."""
    return math.ceil(size[0] / factor), math.ceil(size[1] / factor)
