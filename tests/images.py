"""Image files of every kind the tests need (written byte by byte where no encoder makes them), and Clouds masks."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np


def smooth_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def write(path: Path, image: np.ndarray, params: list[int] | None = None) -> Path:
    """Write with cv2; a 3-channel ``image`` is taken as RGB (4-channel as RGBA)."""
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image, params or [])
    return path


def every_format(folder: Path, height: int = 30, width: int = 40) -> dict[str, Path]:
    """One file per case the dataset must store exactly as cv2.imread(..., IMREAD_COLOR_RGB) reads it."""
    from PIL import Image

    rgb = smooth_rgb(height, width)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    files = {
        "jpeg": write(folder / "plain.jpg", rgb),
        "progressive jpeg": write(folder / "progressive.jpg", rgb, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
        "grayscale jpeg": write(folder / "gray.jpeg", gray),
        "png": write(folder / "plain.png", rgb),
        "grayscale png": write(folder / "gray.png", gray),
        "rgba png": write(folder / "alpha.png", np.dstack([rgb, np.full((height, width), 90, np.uint8)])),
        "16-bit png": write(folder / "deep.png", (rgb.astype(np.uint16) * 257 + 100)),
        "tiff": write(folder / "plain.tiff", rgb),
        "webp": write(folder / "lossless.webp", rgb, [cv2.IMWRITE_WEBP_QUALITY, 101]),
        "lossy webp": write(folder / "lossy.webp", rgb, [cv2.IMWRITE_WEBP_QUALITY, 80]),
        "rgba webp": write(folder / "alpha.webp", np.dstack([rgb, np.full((height, width), 90, np.uint8)]), [cv2.IMWRITE_WEBP_QUALITY, 80]),
        "bmp": write(folder / "plain.bmp", rgb),
    }
    cmyk = folder / "cmyk.jpg"
    Image.fromarray(rgb).convert("CMYK").save(cmyk, quality=95)
    files["cmyk jpeg"] = cmyk
    disguised = folder / "really_a_png.jpg"
    disguised.write_bytes((folder / "plain.png").read_bytes())
    files["png named .jpg"] = disguised
    return files


def png_with_size(path: Path, height: int, width: int) -> Path:
    """A PNG whose header claims height x width but holds almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def jpeg_claiming_size(path: Path, height: int, width: int) -> Path:
    """A small real JPEG whose frame header is rewritten to claim height x width."""
    ok, enc = cv2.imencode(".jpg", smooth_rgb(16, 16))
    data = bytearray(enc.tobytes())
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    path.write_bytes(bytes(data))
    return path


def broken_files(folder: Path, height: int = 48, width: int = 64) -> dict[str, tuple[Path, str]]:
    """name -> (file, words the reason must contain)."""
    folder.mkdir(parents=True, exist_ok=True)
    good_jpeg = write(folder / "_source.jpg", smooth_rgb(height, width, seed=5)).read_bytes()
    good_png = write(folder / "_source.png", smooth_rgb(height, width, seed=6)).read_bytes()
    (folder / "_source.jpg").unlink()
    (folder / "_source.png").unlink()
    cases = {
        "zero bytes": (folder / "empty.jpg", b"", "empty file (0 bytes)"),
        "not an image": (folder / "notes.png", b"just some text, not pixels\n" * 20, "not a decodable image"),
        "truncated jpeg": (folder / "cut.jpg", good_jpeg[: len(good_jpeg) * 2 // 3], "truncated JPEG"),
        "truncated png": (folder / "cut.png", good_png[: len(good_png) * 2 // 3], "truncated PNG"),
    }
    out = {}
    for name, (path, data, reason) in cases.items():
        path.write_bytes(data)
        out[name] = (path, reason)
    out["enormous png header"] = (png_with_size(folder / "huge.png", 100_000, 100_000), "header claims 100000x100000 pixels")
    out["enormous jpeg header"] = (jpeg_claiming_size(folder / "huge.jpg", 60_000, 60_000), "header claims 60000x60000 pixels")
    return out


def exif_rotated_webp(path: Path, rgb: np.ndarray, orientation: int = 6) -> Path:
    """A lossy WebP of ``rgb`` with an EXIF orientation chunk after its pixels, as Pillow writes it."""
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(rgb).save(path, quality=90, exif=exif.tobytes())
    return path


def exif_rotated_jpeg(path, rgb: np.ndarray, orientation: int = 6) -> None:
    """A JPEG of ``rgb`` with an EXIF orientation tag (6: rotate 90 degrees clockwise to display)."""
    ok, enc = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    ifd = b"MM\x00*\x00\x00\x00\x08" + struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0) + b"\x00" * 4
    app1 = b"\xff\xe1" + struct.pack(">H", 8 + len(ifd)) + b"Exif\x00\x00" + ifd
    data = enc.tobytes()
    path.write_bytes(data[:2] + app1 + data[2:])


# --- Clouds masks: what a labels CSV of Understanding Clouds holds ---

CLASSES = ["Fish", "Flower", "Gravel", "Sugar"]


def encode(mask: np.ndarray) -> str:
    """The Clouds encoding, written out plainly: 1-based starts, column-major order."""
    flat = list(mask.T.reshape(-1))
    runs, i = [], 0
    while i < len(flat):
        if flat[i]:
            j = i
            while j < len(flat) and flat[j]:
                j += 1
            runs += [i + 1, j - i]
            i = j
        else:
            i += 1
    return " ".join(map(str, runs))


def random_masks(seed: int, height: int = 48, width: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    masks = np.zeros((height, width, len(CLASSES)), np.uint8)
    for k in range(len(CLASSES)):
        if rng.random() < 0.7:
            y, x = rng.integers(0, height - 8), rng.integers(0, width - 8)
            masks[y : y + rng.integers(4, 20), x : x + rng.integers(4, 30), k] = 1
    return masks


def write_clouds_csv(path, truth: dict[str, np.ndarray]) -> None:
    lines = ["Image_Label,EncodedPixels"]
    for rel, masks in truth.items():
        lines += [f"{rel}_{c},{encode(masks[..., k])}" for k, c in enumerate(CLASSES)]
    path.write_text("\n".join(lines) + "\n")


def stored_masks(f, rows=None) -> np.ndarray:
    """The masks an HDF5 file (or group) stores, (n, H, W, K), unpacked with plain numpy as the README's
    dataset table says: ``mask_bits`` rows of bits, bit order little, of ``mask_shape``."""
    bits = f["mask_bits"]
    h, w, k = (int(x) for x in bits.attrs["mask_shape"])
    assert bits.attrs["bit_order"] == "little"
    data = bits[()] if rows is None else bits[rows]
    return np.unpackbits(data, axis=-1, count=h * w * k, bitorder="little").reshape(-1, h, w, k)
