"""Pixels: a JPEG straight from the bytes already read, into its row or the scratch array.

``decode_into`` reads every file once to hash it; libjpeg-turbo (through
simplejpeg) then decodes those bytes into a preallocated array, at 1/2, 1/4 or
1/8 scale in the DCT when asked. OpenCV's ``imread`` would read the file again
and, for the benchmark's Clouds JPEGs at 1/2 scale, took 5.7-6.1 ms against 4.8.
Both wrap libjpeg-turbo with the same settings (accurate integer DCT, smooth
chroma upsampling), so the pixels are the same; tests/test_images.py checks
that against ``cv2.imread`` for every kind of JPEG it makes.

What this path does not do, OpenCV still does (decode.py falls back to it):
EXIF rotation, anything libjpeg-turbo only warns about (simplejpeg's strict
mode raises on warnings) and every error message.
"""

from __future__ import annotations

import numpy as np
import simplejpeg

from .geometry import reduced_size
from .header import Header


def jpeg_into(data: bytes, header: Header, dst: np.ndarray, factor: int) -> bool:
    """Decode the JPEG ``data`` at 1/``factor`` into ``dst`` (H, W, 3); False where OpenCV must do it instead."""
    if header.kind != "jpeg" or header.size is None or header.orientation != 1:
        return False
    height, width = dst.shape[:2]
    if (height, width) != reduced_size(header.size, factor) or not dst.flags.c_contiguous:
        return False
    try:
        img = simplejpeg.decode_jpeg(
            data, "RGB", min_height=height, min_width=width, min_factor=factor, buffer=dst
        )
    except ValueError:  # not a JPEG it can decode cleanly: OpenCV decides, and names the reason
        return False
    return img.shape == dst.shape and np.shares_memory(img, dst)
