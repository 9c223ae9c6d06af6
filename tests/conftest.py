"""Fixtures: generated images, the real snakemake command, and a /dev/shm leak check on every test."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import psutil
import pytest

from imgshard import shm
from imgshard.build.shard import run_tag

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


def snakemake_cmd(workdir: Path, *args: str, cores: int = 2, **config) -> list[str]:
    """The real snakemake on this repository's Snakefile in ``workdir``, ``config`` as --config pairs."""
    return [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--cores", str(cores), *args, *config_args(**config)]


def snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 240, cores: int = 2, **config) -> subprocess.CompletedProcess:
    """Run the real snakemake on this repository's Snakefile in ``workdir``; output and errors combined."""
    cmd = snakemake_cmd(workdir, *args, cores=cores, **config)
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

    from imgshard.publish.gather import skipped_of

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

    from imgshard.build.index import read_index
    from tests.images import stored_masks

    index = read_index(str(path))
    folder = Path(path).parent
    parts = [h5py.File(folder / p, "r") for p in index.parts]
    try:
        n = len(index)
        first = parts[0] if parts else None
        images = np.stack([parts[p]["images"][r] for p, r in zip(index.part, index.row)]) if n else np.zeros((0,))
        masks = np.concatenate([stored_masks(parts[p], [r]) for p, r in zip(index.part, index.row)]) if n and "mask_bits" in first else None
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
    from imgshard.build.shard import ShardJob, build_shard
    from imgshard.pixels.geometry import Geometry
    from imgshard.publish.snapshots import gather_and_publish

    out = root / "results/dataset.h5"
    shards = []
    for k, group in enumerate(groups):
        index = root / "results/dataset.shards" / f"shard-{k:03d}.h5"
        index.parent.mkdir(parents=True, exist_ok=True)
        build_shard(ShardJob([str(images / r) for r in group], group, str(index), Geometry(*shape), shard=k, workers=1, **shard_args))
        shards.append(str(index))
    compression = shard_args.get("compression", "none")
    gather_and_publish(shards, str(out), shape, mode=mode, compression=compression)
    return out


def fresh_build_of(images: Path, shards: int) -> dict:
    """What a fresh full-size build of ``images`` stores, without building it: the images shard by shard,
    sorted within each, with their digests, sizes and pixels as cv2 reads them."""
    import hashlib

    from imgshard.plan.discover import find_images
    from imgshard.plan.shard import assign

    paths = [rel for group in assign(find_images(images), shards) for rel in group]
    pixels = [reference_pixels(images, rel) for rel in paths]
    return {
        "paths": paths,
        "sha256": [hashlib.sha256((images / rel).read_bytes()).hexdigest() for rel in paths],
        "original_size": np.array([p.shape[:2] for p in pixels]).reshape(-1, 2),
        "images": np.stack(pixels) if pixels else np.zeros((0,)),
    }


@pytest.fixture
def clouds(tmp_path):
    """9 images with random Clouds masks in a train.csv: (images, csv, {path: masks})."""
    from tests.images import random_masks, write_clouds_csv

    images = tmp_path / "images"
    rels = make_images(images, 9)
    truth = {rel: random_masks(i) for i, rel in enumerate(rels)}
    write_clouds_csv(tmp_path / "train.csv", truth)
    return images, tmp_path / "train.csv", truth


def wait_until(event, what: str, timeout: float = 120, interval: float = 0.01):
    """Poll ``event()`` until it returns something true (which is returned); AssertionError saying
    ``what`` did not happen within ``timeout`` seconds. For events with nothing to block on."""
    deadline = time.monotonic() + timeout
    while True:
        found = event()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen in {timeout} s")
        time.sleep(interval)


def mount_refused(namespace: bool = False) -> str | None:
    """Why this machine will not let a test mount a small tmpfs (in a mount namespace of its own), or None."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    if namespace and not shutil.which("unshare"):
        return "a mount namespace needs unshare (util-linux)"
    with tempfile.TemporaryDirectory() as probe:
        cmd = ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", probe]
        cmd = ["unshare", "--mount", "--propagation", "private", *cmd] if namespace else cmd
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            return f"this machine refuses {' '.join(cmd[:3])}...: {proc.stderr.strip() or proc.returncode}"
        if not namespace:
            subprocess.run(["umount", probe], check=True)
    return None


class Gate:
    """An image that holds up whoever decodes it until the test lets it through: a FIFO named like a
    JPEG. A shard job's worker that opens it blocks there, so the test knows the job is mid-decode
    (``wait_until_opened``) for as long as it likes, whatever the machine's speed. ``release`` feeds
    it ``content`` (a JPEG's bytes) and leaves a plain file with those bytes in its place."""

    def __init__(self, path: Path, content: bytes):
        self.path, self.content = Path(path), content
        self.path.parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(self.path)
        self.fd: int | None = None

    def wait_until_opened(self, timeout: float = 120) -> None:
        def opened() -> int | None:
            try:  # succeeds only once a reader has the FIFO open
                return os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as e:
                if e.errno != errno.ENXIO:
                    raise
                return None

        self.fd = wait_until(opened, f"a process opening {self.path}", timeout)

    def release(self) -> None:
        """Let the reader through (it has the FIFO open), then put a plain file in the FIFO's place."""
        if self.fd is None:
            self.wait_until_opened()
        if self.fd is not None:
            os.set_blocking(self.fd, True)
            with contextlib.suppress(BrokenPipeError):  # the reader was killed meanwhile
                os.write(self.fd, self.content)
            os.close(self.fd)
            self.fd = None
        self.replace()

    def replace(self) -> None:
        """A plain file with the content in the FIFO's place (the reader, if any, gets an error)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        tmp = self.path.with_name(self.path.name + ".plain")
        tmp.write_bytes(self.content)
        os.replace(tmp, self.path)


def jpeg_bytes(seed: int, height: int = 48, width: int = 64) -> bytes:
    """The bytes write_image would write for ``seed``."""
    with tempfile.TemporaryDirectory() as folder:
        return write_image(Path(folder) / "x.jpg", seed, height, width).read_bytes()
