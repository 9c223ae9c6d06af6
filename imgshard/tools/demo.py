"""A deterministic demo image set shaped like Kaggle's "Understanding Clouds" (1400x2100 RGB JPEGs).

    python -m imgshard.demo demo --train 36 --test 12

writes demo/train_images/ with their masks in demo/train.csv, and
demo/test_images/ without labels, as the competition's data comes.

Each image is fractal noise thresholded into cloud fields over a dark ocean,
with the black no-data swath the real satellite mosaics have. The same seed
always gives the same files.
"""

from __future__ import annotations

import argparse
import os

import cv2
import numpy as np

HEIGHT, WIDTH = 1400, 2100


def cloud_image(seed: int, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """One RGB uint8 image of clouds; deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    field = np.zeros((height, width), np.float32)
    # Octaves of upsampled random grids: large cloud bands plus fine texture.
    for octave in range(6):
        cells = 3 * 2**octave
        grid = rng.random((cells, max(2, cells * width // height)), dtype=np.float32)
        field += cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC) * 0.55**octave
    field = (field - field.min()) / (np.ptp(field) + 1e-6)
    cover = np.clip((field - rng.uniform(0.35, 0.6)) * 4.0, 0.0, 1.0)[..., None]
    ocean = np.array([18, 42, 70], np.float32) + rng.normal(0, 3, (height, width, 1)).astype(np.float32)
    cloud = np.array([232, 236, 240], np.float32) * (0.8 + 0.2 * field[..., None])
    img = ocean * (1 - cover) + cloud * cover
    # The no-data swath between satellite passes.
    x0 = int(rng.uniform(0.1, 0.9) * width)
    slope = rng.uniform(-0.3, 0.3)
    cols = np.arange(width)[None, :] - (x0 + slope * np.arange(height)[:, None])
    img[(cols > 0) & (cols < rng.uniform(40, 160))] = 0
    return np.clip(img, 0, 255).astype(np.uint8)


def photo_image(seed: int, height: int, width: int) -> np.ndarray:
    """A photograph-like RGB uint8 image with detail at every scale; deterministic in ``seed``.

    A dead-leaves scene (opaque discs and boxes of power-law sizes occluding one
    another: the classic model of natural images' statistics, sharp edges at
    every scale), textured by 1/f noise, with sensor noise on top. Smooth
    synthetic images hide what resampling costs; these do not.
    """
    rng = np.random.default_rng(seed)
    img = np.empty((height, width, 3), np.uint8)
    img[:] = rng.integers(0, 256, 3)
    n = height * width // 2000
    # Radii with density ~ r^-3 between 2 px and a quarter of the image: scale invariant.
    r_min, r_max = 2.0, max(height, width) / 4
    radii = (r_min**-2 - rng.random(n) * (r_min**-2 - r_max**-2)) ** -0.5
    xs, ys = rng.integers(0, width, n), rng.integers(0, height, n)
    colours = rng.integers(0, 256, (n, 3))
    discs = rng.random(n) < 0.5
    for i in np.argsort(-radii):  # large shapes first, small ones on top
        x, y, r, colour = int(xs[i]), int(ys[i]), int(radii[i]), tuple(int(c) for c in colours[i])
        if discs[i]:
            cv2.circle(img, (x, y), r, colour, -1, cv2.LINE_AA)
        else:
            cv2.rectangle(img, (x - r, y - r // 2), (x + r, y + r // 2), colour, -1)
    texture = np.zeros((height, width), np.float32)
    for octave in range(7):
        cells = 4 * 2**octave
        grid = rng.standard_normal((cells, max(2, cells * width // height)), dtype=np.float32)
        texture += cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC) * 0.7**octave
    out = img.astype(np.float32) + 12 * texture[..., None] + rng.normal(0, 4, (height, width, 1)).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


def write_demo(
    folder: str, count: int = 36, height: int = HEIGHT, width: int = WIDTH, seed: int = 2019, first: int = 0
) -> list[str]:
    """Write JPEGs number ``first`` to ``first + count - 1`` into ``folder``; return their file names."""
    os.makedirs(folder, exist_ok=True)
    names = []
    for i in range(first, first + count):
        image_seed = seed * 100_003 + i
        name = f"{np.random.default_rng(image_seed).integers(16**7):07x}.jpg"
        bgr = cv2.cvtColor(cloud_image(image_seed, height, width), cv2.COLOR_RGB2BGR)
        if not cv2.imwrite(os.path.join(folder, name), bgr, [cv2.IMWRITE_JPEG_QUALITY, 90]):
            raise OSError(f"{os.path.join(folder, name)}: could not write")
        names.append(name)
    return names


CLASSES = ("Fish", "Flower", "Gravel", "Sugar")


def write_labels(csv_path: str, names: list[str], height: int = HEIGHT, width: int = WIDTH, seed: int = 2019) -> None:
    """A train.csv in the Understanding Clouds format: for each image, a few classes, each a box."""
    from ..pixels.rle import rle_encode

    lines = ["Image_Label,EncodedPixels"]
    for i, name in enumerate(names):
        rng = np.random.default_rng(seed * 7 + i)
        for cls in CLASSES:
            mask = np.zeros((height, width), np.uint8)
            if rng.random() < 0.5:
                h, w = int(rng.uniform(0.2, 0.5) * height), int(rng.uniform(0.2, 0.5) * width)
                y, x = int(rng.integers(0, height - h)), int(rng.integers(0, width - w))
                mask[y : y + h, x : x + w] = 1
            lines.append(f"{name}_{cls},{rle_encode(mask)}")
    with open(csv_path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="gets train_images/, train.csv and test_images/")
    parser.add_argument("--train", type=int, default=36, help="labelled images")
    parser.add_argument("--test", type=int, default=12, help="images without labels")
    parser.add_argument("--height", type=int, default=HEIGHT)
    parser.add_argument("--width", type=int, default=WIDTH)
    parser.add_argument("--seed", type=int, default=2019)
    args = parser.parse_args(argv)
    train = os.path.join(args.folder, "train_images")
    names = write_demo(train, args.train, args.height, args.width, args.seed)
    labels = os.path.join(args.folder, "train.csv")
    write_labels(labels, names, args.height, args.width, args.seed)
    print(f"wrote {len(names)} demo images of {args.height}x{args.width} to {train}, their masks ({', '.join(CLASSES)}) to {labels}")
    # Other image seeds than the train set's: the test images are new scenes.
    test = os.path.join(args.folder, "test_images")
    names = write_demo(test, args.test, args.height, args.width, args.seed, first=args.train)
    print(f"wrote {len(names)} demo images without labels to {test}")


if __name__ == "__main__":
    main()
