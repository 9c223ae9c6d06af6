"""The baselines the pipeline is measured against, each run as its own process.

    python -m benchmarks.contenders {serial,pool,limit} IMAGES_DIR OUT.h5 --cores C

    python -m benchmarks.contenders {serial,limit,limit_imread} IMAGES_DIR OUT.h5 --size H,W

serial: the seed article's loader: imread every image in one process, stack, write.
        With --size: each full decode resized with INTER_AREA.
pool:   multiprocessing.Pool.map returning arrays (pixels pickled through pipes), stack, write.
limit:  one process decoding every image into a preallocated buffer, the fastest
        way this machine has (a JPEG with libjpeg-turbo through simplejpeg, from
        bytes read whole, as the pipeline does; anything else with cv2.imread):
        the decode work no parallel version can avoid; the benchmark divides its
        time by C. With --size: a JPEG decoded at the largest DCT reduction that
        still covers the size (1/2, 1/4, 1/8), then INTER_AREA into the row.
limit_imread: the same with cv2.imread for every file, the decoder
        of every format but JPEG.
"""

from __future__ import annotations

import argparse
import glob
import io
import os
from multiprocessing import Pool

import cv2
import h5py
import numpy as np
import simplejpeg

from imgshard.pixels.header import read_header

FLAGS = cv2.IMREAD_COLOR_RGB
EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")


def _read(path: str) -> np.ndarray:
    cv2.setNumThreads(1)
    return cv2.imread(path, FLAGS)


def _resized(path: str, size: tuple[int, int]) -> np.ndarray:
    cv2.setNumThreads(1)
    img = cv2.imread(path, FLAGS)
    return cv2.resize(img, size[::-1], interpolation=cv2.INTER_AREA)


_REDUCED = ((8, cv2.IMREAD_REDUCED_GRAYSCALE_8), (4, cv2.IMREAD_REDUCED_GRAYSCALE_4), (2, cv2.IMREAD_REDUCED_GRAYSCALE_2))


def _fastest_reduced(path: str, size: tuple[int, int], row: np.ndarray, imread_only: bool) -> None:
    with open(path, "rb") as f:
        data = None if imread_only else f.read()  # imread reads the file itself
        header = read_header(f if imread_only else io.BytesIO(data))
    factor, flags = 1, FLAGS
    if header.kind == "jpeg" and header.size:
        h, w = header.size
        factor, flag = next(((f, flag) for f, flag in _REDUCED if h / f >= size[0] and w / f >= size[1]), (1, 0))
        flags = flag | cv2.IMREAD_COLOR_RGB if flag else FLAGS
    if header.kind == "jpeg" and not imread_only:
        img = simplejpeg.decode_jpeg(data, "RGB", min_height=size[0], min_width=size[1], min_factor=factor)
    else:
        img = cv2.imread(path, flags)
    cv2.resize(img, size[::-1], dst=row, interpolation=cv2.INTER_AREA)


def _write(images: np.ndarray, out: str) -> None:
    with h5py.File(out, "w") as f:
        f.create_dataset("images", data=images, chunks=(1, *images.shape[1:]))


def serial(paths: list[str], out: str, cores: int, size=None) -> None:
    _write(np.stack([_read(p) if size is None else _resized(p, size) for p in paths]), out)


def pool(paths: list[str], out: str, cores: int, size=None) -> None:
    with Pool(cores) as workers:
        images = workers.map(_read, paths, chunksize=max(1, len(paths) // (cores * 8)))
    _write(np.stack(images), out)


def limit(paths: list[str], out: str, cores: int, size=None, imread_only: bool = False) -> None:
    cv2.setNumThreads(1)
    if size is not None:
        row = np.empty((*size, 3), np.uint8)
        for path in paths:
            _fastest_reduced(path, size, row, imread_only)
        return
    # A few reused rows: decode cost without the page faults of a fresh array.
    first = _read(paths[0])
    rows = np.empty((4, *first.shape), np.uint8)
    for i, path in enumerate(paths):
        if imread_only or not path.lower().endswith((".jpg", ".jpeg")):
            cv2.imread(path, rows[i % 4], FLAGS)
        else:
            with open(path, "rb") as f:
                simplejpeg.decode_jpeg(f.read(), "RGB", buffer=rows[i % 4])


def limit_imread(paths: list[str], out: str, cores: int, size=None) -> None:
    limit(paths, out, cores, size, imread_only=True)


CONTENDERS = {"serial": serial, "pool": pool, "limit": limit, "limit_imread": limit_imread}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("name", choices=CONTENDERS)
    parser.add_argument("images_dir")
    parser.add_argument("out")
    parser.add_argument("--cores", type=int, default=os.cpu_count())
    parser.add_argument("--size", help="H,W to resize to")
    args = parser.parse_args()
    paths = sorted(p for p in glob.glob(os.path.join(args.images_dir, "*")) if p.lower().endswith(EXTENSIONS))
    size = tuple(int(v) for v in args.size.split(",")) if args.size else None
    CONTENDERS[args.name](paths, args.out, args.cores, size)


if __name__ == "__main__":
    main()
