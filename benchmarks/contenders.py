"""The baselines the pipeline is measured against, each run as its own process.

    python -m benchmarks.contenders {serial,pool,limit} IMAGES_DIR OUT.h5 --cores C

    python -m benchmarks.contenders {serial,limit} IMAGES_DIR OUT.h5 --size H,W

serial: the seed article's loader: imread every image in one process, stack, write.
        With --size: each full decode resized with INTER_AREA.
pool:   multiprocessing.Pool.map returning arrays (pixels pickled through pipes), stack, write.
limit:  one process decoding every image into a preallocated buffer: the decode
        work no parallel version can avoid; the benchmark divides its time by C.
        With --size: the fastest fair way, a JPEG decoded at the largest DCT
        reduction that still covers the size (1/2, 1/4, 1/8), then INTER_AREA into the row.
"""

from __future__ import annotations

import argparse
import glob
import os
from multiprocessing import Pool

import cv2
import h5py
import numpy as np

from imgshard.header import read_header

FLAGS = cv2.IMREAD_COLOR_RGB
EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")


def _read(path: str) -> np.ndarray:
    cv2.setNumThreads(1)
    return cv2.imread(path, FLAGS)


def _resized(path: str, size: tuple[int, int]) -> np.ndarray:
    cv2.setNumThreads(1)
    img = cv2.imread(path, FLAGS)
    return cv2.resize(img, size[::-1], interpolation=cv2.INTER_AREA)


def _fastest_reduced(path: str, size: tuple[int, int], row: np.ndarray) -> None:
    flags = FLAGS
    with open(path, "rb") as f:
        header = read_header(f)  # a few hundred bytes: what the JPEG's size is
    if header.kind == "jpeg" and header.size:
        h, w = header.size
        for factor, flag in ((8, cv2.IMREAD_REDUCED_GRAYSCALE_8), (4, cv2.IMREAD_REDUCED_GRAYSCALE_4), (2, cv2.IMREAD_REDUCED_GRAYSCALE_2)):
            if h / factor >= size[0] and w / factor >= size[1]:
                flags = flag | cv2.IMREAD_COLOR_RGB
                break
    cv2.resize(cv2.imread(path, flags), size[::-1], dst=row, interpolation=cv2.INTER_AREA)


def _write(images: np.ndarray, out: str) -> None:
    with h5py.File(out, "w") as f:
        f.create_dataset("images", data=images, chunks=(1, *images.shape[1:]))


def serial(paths: list[str], out: str, cores: int, size=None) -> None:
    _write(np.stack([_read(p) if size is None else _resized(p, size) for p in paths]), out)


def pool(paths: list[str], out: str, cores: int, size=None) -> None:
    with Pool(cores) as workers:
        images = workers.map(_read, paths, chunksize=max(1, len(paths) // (cores * 8)))
    _write(np.stack(images), out)


def limit(paths: list[str], out: str, cores: int, size=None) -> None:
    cv2.setNumThreads(1)
    if size is not None:
        row = np.empty((*size, 3), np.uint8)
        for path in paths:
            _fastest_reduced(path, size, row)
        return
    # A few reused rows: decode cost without the page faults of a fresh array.
    first = _read(paths[0])
    rows = np.empty((4, *first.shape), np.uint8)
    for i, path in enumerate(paths):
        cv2.imread(path, rows[i % 4], FLAGS)


CONTENDERS = {"serial": serial, "pool": pool, "limit": limit}


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
