"""How rows are stored and restored: the compression a dataset's rows are written with, and the masks' bits.

One home for both sides of the format's encodings: build/ and publish/ write
rows with ``create_args`` and pack masks with ``pack_masks``; read/ finds the
decoder of a stored dataset with ``decoder_of`` (from the HDF5 filter it was
written with) and unpacks masks with ``unpack_masks``.

Compression (``compression:`` in the config): ``none`` stores rows plainly;
``lzf`` (h5py's own filter) and ``gzip`` (HDF5's deflate, level 4) are read
by any h5py; ``lz4`` and ``zstd`` are HDF5 filter plugins registered by
``hdf5plugin``, which this module imports (outside Python, HDF5's tools find
them through ``HDF5_PLUGIN_PATH``). Every codec decodes with imagecodecs
into the caller's buffer, the GIL released, which is what lets a reader
decompress rows in its own threads instead of one at a time in h5py.

Masks: an image's (H, W, K) masks of 0/1 are stored as one row of
``ceil(H * W * K / 8)`` bytes, ``numpy.packbits`` of the row flattened, bit
order little (the first mask value is bit 0 of byte 0):
``numpy.unpackbits(row, count=H * W * K, bitorder="little").reshape(H, W, K)``
gives them back. A sixth of an image's bytes for the four Clouds classes,
and unpacked at about 25,000 rows/s on one core (docs/design.md).
"""

from __future__ import annotations

from collections.abc import Callable

import h5py
import hdf5plugin  # noqa: F401  registers the lz4 and zstd filters with h5py's HDF5
import imagecodecs
import numpy as np

COMPRESSIONS = ("none", "lzf", "gzip", "lz4", "zstd")
GZIP_LEVEL = 4
ZSTD_LEVEL = 3

# HDF5 filter ids (the registry at support.hdfgroup.org): what a stored dataset says it was written with.
DEFLATE, LZF, LZ4, ZSTD = h5py.h5z.FILTER_DEFLATE, 32000, 32004, 32015
_NAMES = {DEFLATE: "gzip", LZF: "lzf", LZ4: "lz4", ZSTD: "zstd"}
# decode(stored bytes, out=a flat uint8 array) fills ``out``; each releases the GIL while it works.
_DECODE: dict[int, Callable] = {
    DEFLATE: imagecodecs.deflate_decode,  # libdeflate: the zlib stream HDF5 writes, twice zlib's speed
    LZF: imagecodecs.lzf_decode,
    LZ4: imagecodecs.lz4h5_decode,  # the LZ4 filter's framing (sizes, then blocks)
    ZSTD: imagecodecs.zstd_decode,
}


def create_args(compression: str) -> dict:
    """h5py ``create_dataset`` arguments that store rows with ``compression`` (one of COMPRESSIONS)."""
    if compression == "none":
        return {}
    if compression == "lzf":
        return {"compression": "lzf"}
    if compression == "gzip":
        return {"compression": "gzip", "compression_opts": GZIP_LEVEL}
    if compression == "lz4":
        return dict(hdf5plugin.LZ4())
    if compression == "zstd":
        return dict(hdf5plugin.Zstd(clevel=ZSTD_LEVEL))
    raise ValueError(f"compression: {compression!r} is none of {', '.join(COMPRESSIONS)}")


def filters_of(ds: h5py.Dataset) -> list[int]:
    """The ids of the HDF5 filters ``ds`` is stored through, in order."""
    plist = ds.id.get_create_plist()
    return [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]


def name_of(ds: h5py.Dataset) -> str:
    """The ``compression`` value ``ds`` was written with ("none", ..., or the filter ids of another writer's)."""
    filters = filters_of(ds)
    if not filters:
        return "none"
    return "+".join(_NAMES.get(f, f"filter {f}") for f in filters)


def decoder_of(ds: h5py.Dataset) -> Callable | None:
    """How one stored chunk of ``ds`` becomes its bytes: ``decode(stored, out=flat)``; None when it is stored
    through anything but one filter this module knows (such rows are read through h5py)."""
    filters = filters_of(ds)
    if len(filters) != 1 or filters[0] not in _DECODE:
        return None
    return _DECODE[filters[0]]


# --- masks ---------------------------------------------------------------------------


def mask_bytes(shape: tuple[int, int, int]) -> int:
    """Stored bytes of one image's masks of ``shape`` (H, W, K)."""
    return -(-int(np.prod(shape)) // 8)


def pack_masks(masks: np.ndarray, out: np.ndarray) -> None:
    """One image's (H, W, K) masks of 0/1 into ``out``, its ``mask_bytes`` stored bytes."""
    out[...] = np.packbits(masks.reshape(-1), bitorder="little")


def unpack_masks(stored: np.ndarray, out: np.ndarray) -> None:
    """One image's stored mask bytes into ``out``, (H, W, K) uint8 of 0/1."""
    out.reshape(-1)[...] = np.unpackbits(stored, count=out.size, bitorder="little")
