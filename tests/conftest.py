"""Fixtures: generated images, the real snakemake command, and a /dev/shm leak check on every test."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import psutil
import pytest

from imgshard import shm
from imgshard.build import run_tag

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def write_image(path: Path, seed: int, height: int = 48, width: int = 64, ext: str | None = None) -> Path:
    """A smooth random RGB image (compresses like a photo) written with cv2; returns its path."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    rgb = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    rgb = np.clip(rgb.astype(np.int16) + rng.integers(-20, 20, rgb.shape), 0, 255).astype(np.uint8)
    path = Path(path)
    if ext:
        path = path.with_suffix(ext)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


def make_images(folder: Path, count: int, height: int = 48, width: int = 64, seed: int = 0) -> list[str]:
    """``count`` JPEGs in ``folder`` (some in a subfolder); returns their relative paths."""
    rels = []
    for i in range(count):
        rel = f"{'sub/' if i % 3 == 0 else ''}img{i:04d}.jpg"
        write_image(folder / rel, seed * 1000 + i, height, width)
        rels.append(rel)
    return rels


def config_args(**config) -> list[str]:
    return ["--config", *(f"{k}={v}" for k, v in config.items())] if config else []


def snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 240, **config) -> subprocess.CompletedProcess:
    """Run the real snakemake on this repository's Snakefile in ``workdir``; output and errors combined."""
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--cores", "2", *args]
    cmd += config_args(**config)
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-6000:]}")
    return proc


def jobs_run(output: str, rule: str) -> int:
    """How many jobs of ``rule`` snakemake started, read from its own output."""
    return len(re.findall(rf"^\s*(?:local)?rule {rule}:$", output, flags=re.M))


@pytest.fixture(autouse=True)
def no_shm_leak(tmp_path):
    """Every test must leave /dev/shm as it found it. Tests run two at a time, so a segment is this
    test's when this process made it, or a shard job of this test's folders did (its name carries a
    tag of the shard's path): another test's may come and go meanwhile."""
    before = set(shm.ours())
    yield
    tags = {run_tag(str(m.with_name(m.name.replace("manifest-", "shard-").replace(".tsv", ".h5")))) for m in tmp_path.rglob("manifest-*.tsv")}
    # A DataLoader worker's ring goes with its worker: one left by a worker that is gone is a leak, whoever's.
    ring = [n for n in set(shm.ours()) - before if n.split("-")[1] == "ring" and not psutil.pid_exists(int(n.split("-p")[1].split("-")[0]))]
    leaked = [n for n in set(shm.ours()) - before if f"-p{os.getpid()}-" in n or n.split("-")[1] in tags] + ring
    for name in leaked:
        shm.delete(name)
    assert not leaked, f"shared memory left in /dev/shm: {sorted(leaked)}"


@pytest.fixture
def images(tmp_path) -> Path:
    """A folder of 12 small JPEGs."""
    folder = tmp_path / "images"
    make_images(folder, 12)
    return folder


@pytest.fixture
def workdir(tmp_path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


def read_dataset(path: Path) -> dict:
    import h5py

    from imgshard.gather import skipped_of

    with h5py.File(path, "r") as f:
        return {
            "images": f["images"][()],
            "paths": list(f["paths"].asstr()[()]),
            "sha256": list(f["sha256"].asstr()[()]),
            "original_size": f["original_size"][()],
            "attrs": dict(f.attrs),
            "virtual": f["images"].is_virtual,
            "skipped": skipped_of(f),
        }


def reference_pixels(images_dir: Path, rel: str) -> np.ndarray:
    return cv2.imread(str(images_dir / rel), cv2.IMREAD_COLOR_RGB)


def read_shard(path: Path) -> dict:
    """A shard as its index lists it: images (and masks) read from the part and row of each, in list order."""
    import h5py

    from imgshard.index import read_index

    index = read_index(str(path))
    folder = Path(path).parent
    parts = [h5py.File(folder / p, "r") for p in index.parts]
    try:
        n = len(index)
        first = parts[0] if parts else None
        images = np.stack([parts[p]["images"][r] for p, r in zip(index.part, index.row)]) if n else np.zeros((0,))
        masks = np.stack([parts[p]["masks"][r] for p, r in zip(index.part, index.row)]) if n and "masks" in first else None
        return {
            "images": images,
            "masks": masks,
            "labels": index.labels,
            "paths": index.paths,
            "sha256": index.sha256,
            "original_size": index.sizes,
            "skipped": index.skipped,
            "index": index,
            "chunks": first["images"].chunks if first is not None else None,
        }
    finally:
        for f in parts:
            f.close()


def build_with_package(root: Path, images: Path, groups: list[list[str]], mode: str = "virtual", shape=(48, 64), **shard_args) -> Path:
    """A dataset built by the package's own steps, no Snakemake: each group of relative paths a shard, then gather and publish."""
    from imgshard.build import decode_shard
    from imgshard.geometry import Geometry
    from imgshard.publish import gather_and_publish

    out = root / "results/dataset.h5"
    shards = []
    for k, group in enumerate(groups):
        index = root / "results/dataset.shards" / f"shard-{k:03d}.h5"
        index.parent.mkdir(parents=True, exist_ok=True)
        decode_shard([str(images / r) for r in group], group, str(index), Geometry(*shape), shard=k, workers=1, **shard_args)
        shards.append(str(index))
    compression = shard_args.get("compression", "none")
    gather_and_publish(shards, str(out), shape, mode=mode, compression=compression)
    return out


def fresh_build_of(images: Path, shards: int) -> dict:
    """What a fresh full-size build of ``images`` stores, without building it: the images shard by shard,
    sorted within each, with their digests, sizes and pixels as cv2 reads them."""
    import hashlib

    from imgshard.discover import find_images
    from imgshard.shard import assign

    paths = [rel for group in assign(find_images(images), shards) for rel in group]
    pixels = [reference_pixels(images, rel) for rel in paths]
    return {
        "paths": paths,
        "sha256": [hashlib.sha256((images / rel).read_bytes()).hexdigest() for rel in paths],
        "original_size": np.array([p.shape[:2] for p in pixels]).reshape(-1, 2),
        "images": np.stack(pixels) if pixels else np.zeros((0,)),
    }
