"""The ``imgshard`` command: what people do with a built dataset without writing Python.

    imgshard info results/train.h5
    imgshard show results/train.h5 0 5 17 -o three.png
    imgshard verify results/train.h5
    imgshard export results/train.h5 train-copy.h5

Building stays with Snakemake (``snakemake --cores N``); this reads what it built.
A failure is one line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import h5py
import numpy as np

from .. import __version__
from ..errors import ImgshardError
from ..publish.gather import skipped_of
from ..read.snapshot import source_rows, stored_compression
from ..format import CLASS_COUNTS_ATTR, CLASSES_ATTR, CONFIG_ATTR, GATHER_ATTR, IMAGE_LIST_ATTR, IMAGES, IMAGES_DIR_ATTR, LABELS, MASK_BITS, MASKS


def _open(path: str) -> h5py.File:
    if not os.path.isfile(path):
        raise ImgshardError(f"{path}: no such file")
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise ImgshardError(f"{path}: not an HDF5 file") from None
    if IMAGES not in f:
        f.close()
        raise ImgshardError(f"{path}: not an imgshard dataset (it has no 'images')")
    return f


def part_files(f: h5py.File, path: str) -> tuple[list[str], list[str]]:
    """(every part file of a virtual dataset, those missing or damaged, each with what is wrong); both empty for a copy."""
    if not f[IMAGES].is_virtual:
        return [], []
    folder = os.path.dirname(os.path.abspath(path))
    files = sorted({s.file_name for s in f[IMAGES].virtual_sources()})
    problems = []
    for name in files:
        try:
            source_rows(os.path.join(folder, name), IMAGES, f[IMAGES].shape[1:])
        except ImgshardError as e:
            problems.append(str(e))
    return files, problems


def info(path: str) -> tuple[list[str], list[str]]:
    """What ``imgshard info`` prints, a line each, and what is wrong with its part files (missing, damaged)."""
    with _open(path) as f:
        images = f[IMAGES]
        n, height, width, channels = images.shape
        gather = f.attrs.get(GATHER_ATTR, "virtual" if images.is_virtual else "copy")
        lines = [path, f"images: {n} of {height}x{width}x{channels} {images.dtype} (RGB)"]
        files, problems = part_files(f, path)
        if images.is_virtual:
            reach = "all readable" if not problems else f"{len(problems)} MISSING OR DAMAGED (they would read as zeros)"
            lines.append(f"gather: virtual, over {len(files)} part files, {reach}")
            lines += [f"  {p}" for p in problems]
        else:
            lines.append(f"gather: {gather}, self-contained")
        compression = stored_compression(f, os.path.dirname(os.path.abspath(path)))
        if compression and compression != "none":
            lines.append(f"compression: {compression}")
        target = next((f[name] for name in (MASK_BITS, MASKS, LABELS) if name in f), None)
        if target is not None:
            classes = [str(c) for c in target.attrs.get(CLASSES_ATTR, [])]
            counts = target.attrs.get(CLASS_COUNTS_ATTR)
            if counts is None and target.name == "/labels":
                counts = np.bincount(target[()], minlength=len(classes))
            kind = "labels (images per class)" if target.name == "/labels" else "masks (images with each class)"
            shown = ", ".join(f"{c} {int(k)}" for c, k in zip(classes, counts)) if counts is not None else ", ".join(classes)
            lines.append(f"{kind}: {shown}")
        skipped = skipped_of(f)
        lines.append(f"skipped: {len(skipped)}")
        lines += [f"  {p}: {reason}" for p, reason in skipped]
        config = json.loads(f.attrs.get(CONFIG_ATTR, "{}"))
        lines.append("built with:")
        lines += [f"  {key}: {json.dumps(value)}" for key, value in sorted(config.items())]
        lines.append(f"imgshard version: {f.attrs.get('imgshard_version', 'unknown')}")
    return lines, problems


def show(path: str, indices: list[int], out_png: str) -> list[str]:
    from .figures import draw_sheet
    from ..read import H5ImageDataset

    _open(path).close()  # its one-line errors, before the reader's own
    ds = H5ImageDataset(path)
    for i in indices:
        if not -len(ds) <= i < len(ds):
            raise ImgshardError(f"{path}: index {i} is out of range (it holds {len(ds)} images, 0 to {len(ds) - 1})")
    indices = [i % len(ds) for i in indices]
    folder = os.path.dirname(os.path.abspath(out_png))
    if not os.path.isdir(folder):
        raise ImgshardError(f"-o {out_png}: folder {folder} does not exist")
    return draw_sheet(ds, indices, out_png, f"{path}: {len(indices)} of {len(ds)} images")


def verify(path: str, images_dir: str | None, workers: int) -> str:
    from ..plan.discover import find_images
    from .verify import verify_or_fail

    with _open(path) as f:
        images_dir = images_dir or f.attrs.get(IMAGES_DIR_ATTR)
        image_list = f.attrs.get(IMAGE_LIST_ATTR) or None
    if not images_dir:
        raise ImgshardError(f"{path}: it does not record its images_dir; pass --images-dir")
    current = find_images(images_dir, image_list)
    report = verify_or_fail(path, images_dir, current, workers)
    return f"imgshard: verify: {path}: all {report.checked} images match their sources in {images_dir}"


def parser() -> argparse.ArgumentParser:
    from ..plan.config import physical_cores

    p = argparse.ArgumentParser(prog="imgshard", description="Look into, show, verify and export a dataset that imgshard built.")
    p.add_argument("--version", action="version", version=f"imgshard {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p_info = sub.add_parser("info", help="count, shape, gather mode and part files, classes, skipped files, config")
    p_info.add_argument("dataset")
    p_show = sub.add_parser("show", help="stored images (masks outlined) as one PNG")
    p_show.add_argument("dataset")
    p_show.add_argument("index", nargs="+", type=int, help="image indices (negative counts from the end)")
    p_show.add_argument("-o", "--output", required=True, help="the PNG to write")
    p_verify = sub.add_parser("verify", help="re-hash and re-decode every source against the dataset (as snakemake verify)")
    p_verify.add_argument("dataset")
    p_verify.add_argument("--images-dir", help="where the sources are now (default: where they were when it was built)")
    p_verify.add_argument("--workers", type=int, default=physical_cores(), help="decoding processes (default: physical cores)")
    p_export = sub.add_parser("export", help="a self-contained copy of a dataset (of a virtual one: every row in one file)")
    p_export.add_argument("dataset")
    p_export.add_argument("output", help="the HDF5 file to write")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "info":
            lines, problems = info(args.dataset)
            print("\n".join(lines))
            if problems:
                raise ImgshardError(f"{args.dataset}: {len(problems)} part files of its virtual dataset are missing or damaged: rebuild it (snakemake --cores N)")
        elif args.command == "show":
            shown = show(args.dataset, args.index, args.output)
            print(f"imgshard: wrote {args.output}: {', '.join(shown)}")
        elif args.command == "export":
            from .export import export

            _open(args.dataset).close()  # its one-line errors, before the reader's own
            print(f"imgshard: wrote {args.output}: {export(args.dataset, args.output)} images, self-contained")
        else:
            print(verify(args.dataset, args.images_dir, args.workers))
    except ImgshardError as e:
        print(f"imgshard: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
