"""The baselines the pipeline is measured against, each run as its own process.

    python -m benchmarks.contenders {serial,pool,limit} IMAGES_DIR OUT.h5 --cores C

serial: the seed article's loader: imread every image in one process, stack, write.
pool:   multiprocessing.Pool.map returning arrays (pixels pickled through pipes), stack, write.
limit:  one process decoding every image into a preallocated buffer: the decode
        work no parallel version can avoid; the benchmark divides its time by C.
"""

from __future__ import annotations

import argparse
import glob
import os
from multiprocessing import Pool

import cv2
import h5py
import numpy as np

FLAGS = cv2.IMREAD_COLOR_RGB


def _read(path: str) -> np.ndarray:
    cv2.setNumThreads(1)
    return cv2.imread(path, FLAGS)


def _write(images: np.ndarray, out: str) -> None:
    with h5py.File(out, "w") as f:
        f.create_dataset("images", data=images, chunks=(1, *images.shape[1:]))


def serial(paths: list[str], out: str, cores: int) -> None:
    _write(np.stack([_read(p) for p in paths]), out)


def pool(paths: list[str], out: str, cores: int) -> None:
    with Pool(cores) as workers:
        images = workers.map(_read, paths, chunksize=max(1, len(paths) // (cores * 8)))
    _write(np.stack(images), out)


def limit(paths: list[str], out: str, cores: int) -> None:
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
    args = parser.parse_args()
    paths = sorted(glob.glob(os.path.join(args.images_dir, "*.jpg")))
    CONTENDERS[args.name](paths, args.out, args.cores)


if __name__ == "__main__":
    main()
