"""What an image file's header says, read without decoding: size, orientation, completeness.

Used four ways: to check before any decoding that every image has the same
size, to refuse a file whose header claims an enormous size before anything is
allocated, to pick a reduced-size JPEG decode, to decode into a reused scratch
array rather than a fresh one, and to leave a JPEG that EXIF says to rotate to
OpenCV (jpeg.py decodes the others). Formats other than JPEG, PNG, BMP and WebP
report no size; the decoder's own result is the check for them.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import BinaryIO

# OpenCV refuses images of more pixels than this by default (OPENCV_IO_MAX_IMAGE_PIXELS).
MAX_PIXELS = 1 << 30
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Start-of-frame markers carry the size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not.
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


@dataclass(frozen=True)
class Header:
    kind: str  # "jpeg", "png", "bmp", "webp", or "other"
    size: tuple[int, int] | None  # (height, width) as cv2 will return it (EXIF orientation applied)
    orientation: int = 1  # a JPEG's or WebP's EXIF orientation tag: 1 is stored upright
    alpha: bool = False  # a PNG or WebP with an alpha channel (the stored row is RGB: it is dropped)


def read_header(f: BinaryIO) -> Header:
    """The header of the image in ``f`` (a file opened in binary mode, at its start)."""
    start = f.read(32)
    if start[:2] == b"\xff\xd8":
        f.seek(2)
        return Header("jpeg", *_jpeg_size(f))
    if start[:8] == _PNG_SIGNATURE and start[12:16] == b"IHDR":
        width, height = struct.unpack(">II", start[16:24])
        return Header("png", (height, width), alpha=start[25] in (4, 6))  # colour types grey+alpha, RGBA
    if start[:2] == b"BM" and len(start) >= 26:
        width, height = struct.unpack("<ii", start[18:26])
        return Header("bmp", (abs(height), width))
    if start[:4] == b"RIFF" and start[8:12] == b"WEBP":
        return Header("webp", *_webp_size(start, f), alpha=_webp_alpha(start))
    return Header("other", None)


def header_of(path: str) -> Header:
    with open(path, "rb") as f:
        return read_header(f)


def problem(data: bytes, header: Header) -> str | None:
    """Why the file ``data`` must not be decoded, or None. Checks what decoders let through."""
    if header.size is not None:
        height, width = header.size
        if height <= 0 or width <= 0:
            return f"header claims an impossible size {height}x{width}"
        if height * width > MAX_PIXELS:
            return f"header claims {height}x{width} pixels, more than the {MAX_PIXELS} allowed; refused before decoding"
    if header.kind == "jpeg":
        # libjpeg decodes a truncated JPEG, fills the rest with grey and only
        # warns. Entropy-coded data never holds FFD9, so a whole file has an
        # end-of-image marker after the start of its last scan. Most files end
        # with that marker: then a scan found from the front suffices (the
        # backward search through a whole file cost 0.6 ms, 7% of a decode).
        if data.endswith(b"\xff\xd9") and data.find(b"\xff\xda") != -1:
            return None
        last_scan = data.rfind(b"\xff\xda")
        if last_scan == -1 or data.find(b"\xff\xd9", last_scan) == -1:
            return "truncated JPEG (no end-of-image marker after the last scan)"
    if header.kind == "png" and b"IEND" not in data[-64:]:
        return "truncated PNG (no IEND chunk at the end)"
    return None


def _jpeg_size(f: BinaryIO) -> tuple[tuple[int, int] | None, int]:
    """(size as displayed, EXIF orientation); no size when no frame header comes before the scan."""
    orientation = 1
    while True:
        marker = f.read(2)
        if len(marker) < 2 or marker[0] != 0xFF:
            return None, orientation
        while marker[1] == 0xFF:  # fill bytes
            marker = marker[1:] + f.read(1)
        code = marker[1]
        if code in (0xD8, 0x01) or 0xD0 <= code <= 0xD7:
            continue  # markers without a length
        raw = f.read(2)
        if len(raw) < 2 or code == 0xDA:  # start of scan: no frame header was found
            return None, orientation
        length = struct.unpack(">H", raw)[0] - 2
        if code in _SOF:
            frame = f.read(5)
            if len(frame) < 5:
                return None, orientation
            height, width = struct.unpack(">HH", frame[1:5])
            return ((width, height) if orientation in (5, 6, 7, 8) else (height, width)), orientation
        if code == 0xE1:
            segment = f.read(length)
            if segment.startswith(b"Exif\x00\x00"):
                orientation = _exif_orientation(segment[6:])
        else:
            f.seek(length, io.SEEK_CUR)


def _webp_size(start: bytes, f: BinaryIO) -> tuple[tuple[int, int] | None, int]:
    """(size as displayed, EXIF orientation) of a WebP whose first 32 bytes are ``start``."""
    chunk = start[12:16]
    if chunk == b"VP8 " and start[23:26] == b"\x9d\x01\x2a":  # lossy: a key frame's start code, then 14-bit sizes
        width, height = (v & 0x3FFF for v in struct.unpack("<HH", start[26:30]))
        return (height, width), 1
    if chunk == b"VP8L" and start[20] == 0x2F:  # lossless: 14-bit width - 1 and height - 1
        bits = struct.unpack("<I", start[21:25])[0]
        return ((bits >> 14 & 0x3FFF) + 1, (bits & 0x3FFF) + 1), 1
    if chunk == b"VP8X":  # extended: a 24-bit canvas size; OpenCV applies an EXIF chunk's orientation
        width = int.from_bytes(start[24:27], "little") + 1
        height = int.from_bytes(start[27:30], "little") + 1
        orientation = _webp_exif_orientation(f) if start[20] & 0x08 else 1
        return ((width, height) if orientation in (5, 6, 7, 8) else (height, width)), orientation
    return None, 1


def _webp_alpha(start: bytes) -> bool:
    """A WebP's alpha flag: VP8X's flags byte, or VP8L's alpha_is_used bit."""
    chunk = start[12:16]
    if chunk == b"VP8X":
        return bool(start[20] & 0x10)
    if chunk == b"VP8L" and start[20] == 0x2F:
        return bool(struct.unpack("<I", start[21:25])[0] >> 28 & 1)
    return False


def _webp_exif_orientation(f: BinaryIO) -> int:
    """The orientation in a WebP's EXIF chunk, found by walking its chunk headers (it usually comes last)."""
    f.seek(12)
    while len(head := f.read(8)) == 8:
        name, length = head[:4], struct.unpack("<I", head[4:])[0]
        if name == b"EXIF":
            tiff = f.read(length)
            return _exif_orientation(tiff[6:] if tiff.startswith(b"Exif\x00\x00") else tiff)
        f.seek(length + (length & 1), io.SEEK_CUR)
    return 1


def _exif_orientation(tiff: bytes) -> int:
    """The EXIF orientation tag (0x0112) of a TIFF block, 1 when absent or unreadable."""
    try:
        order = {b"II": "<", b"MM": ">"}[tiff[:2]]
        (ifd,) = struct.unpack(order + "I", tiff[4:8])
        (count,) = struct.unpack(order + "H", tiff[ifd : ifd + 2])
        for i in range(count):
            entry = tiff[ifd + 2 + 12 * i : ifd + 14 + 12 * i]
            tag, kind = struct.unpack(order + "HH", entry[:4])
            if tag == 0x0112 and kind == 3:
                return struct.unpack(order + "H", entry[8:10])[0]
    except (KeyError, struct.error):
        pass
    return 1
