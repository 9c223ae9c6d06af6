"""Killed workers, signals to snakemake, leftovers of hard-killed runs, concurrent runs."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import psutil
import pytest

from imgshard import shm
from tests.conftest import REPO, SNAKEMAKE, config_args, read_dataset, read_shard, reference_pixels, snakemake


SLOW = 24  # images in slow_images


@pytest.fixture
def slow_images(tmp_path) -> Path:
    """24 noisy 1200x1800 JPEGs: about 2 s of decoding for one worker, time enough to interrupt."""
    folder = tmp_path / "slow"
    folder.mkdir()
    noise = np.random.default_rng(0).integers(0, 256, (1200, 1800, 3), dtype=np.uint8)
    cv2.imwrite(str(folder / "img000.jpg"), noise, [cv2.IMWRITE_JPEG_QUALITY, 95])
    for i in range(1, SLOW):
        shutil.copy(folder / "img000.jpg", folder / f"img{i:03d}.jpg")
    return folder


def start(workdir: Path, **config) -> subprocess.Popen:
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--cores", "1"]
    return subprocess.Popen(
        cmd + config_args(**config), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def wait_for_workers(proc: subprocess.Popen, timeout: float = 60) -> tuple[psutil.Process, list[psutil.Process]]:
    """The shard job's parent (owner of a new segment) and its workers (the others that map it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        mine = {p.pid for p in psutil.Process(proc.pid).children(recursive=True)}
        for name in shm.ours():
            pid = int(name.split("-p")[1].split("-")[0])
            if pid not in mine:
                continue  # another run's
            owner = psutil.Process(pid)
            workers = [p for p in owner.children(recursive=True) if maps(p, name)]
            if workers:
                return owner, workers
        time.sleep(0.02)
    raise AssertionError("the shard job never started its workers")


def maps(proc: psutil.Process, segment: str) -> bool:
    try:
        return any(m.path.endswith("/" + segment) for m in proc.memory_maps())
    except psutil.Error:
        return False


def assert_nothing_half_written(workdir: Path) -> None:
    assert not list(workdir.rglob("*.h5")), "no shard may be written when its job failed"
    assert not list(workdir.rglob("*.tmp-*"))


def test_killed_worker_fails_the_job_quickly_and_a_rerun_completes(slow_images, workdir):
    proc = start(workdir, images_dir=slow_images, shards=1, workers=1)
    owner, workers = wait_for_workers(proc)
    workers[0].send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=60)  # a hang fails here
    assert proc.returncode != 0
    assert "imgshard: shard 0: a worker process died" in out
    assert not owner.is_running()
    assert_nothing_half_written(workdir)

    snakemake(workdir, "--rerun-incomplete", images_dir=slow_images, shards=1, workers=1)
    ds = read_dataset(workdir / "results/dataset.h5")
    assert len(ds["paths"]) == SLOW
    np.testing.assert_array_equal(ds["images"][7], reference_pixels(slow_images, ds["paths"][7]))


@pytest.mark.parametrize(
    "sig, group",
    [
        (signal.SIGTERM, False),  # snakemake alone: it lets running jobs finish, then stops
        (signal.SIGINT, True),  # Ctrl-C in a terminal: the whole process group
        (signal.SIGTERM, True),  # a batch system ending the job: the whole group
    ],
    ids=["sigterm-snakemake", "ctrl-c", "sigterm-group"],
)
def test_signal_leaves_no_half_written_file_and_no_shared_memory(slow_images, workdir, sig, group):
    proc = start(workdir, images_dir=slow_images, shards=1, workers=1)
    owner, _ = wait_for_workers(proc)
    if group:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    psutil.wait_procs([owner], timeout=10)
    assert not owner.is_running()
    assert not list(workdir.rglob("*.tmp-*"))
    assert not (workdir / "results/dataset.h5").exists()
    shard = workdir / "results/dataset.shards/shard-000.h5"
    if group:
        assert "interrupted by" in (workdir / "logs/decode_shard/dataset/000.log").read_text()
        assert not shard.exists()
    else:  # snakemake let the running job finish before it stopped: the shard is there, and whole
        assert f"shard 0: {SLOW} images" in (workdir / "logs/decode_shard/dataset/000.log").read_text()
        assert len(read_shard(shard)["paths"]) == SLOW

    snakemake(workdir, "--rerun-incomplete", images_dir=slow_images, shards=1, workers=1)
    ds = read_dataset(workdir / "results/dataset.h5")
    assert len(ds["paths"]) == SLOW
    np.testing.assert_array_equal(ds["images"][-1], reference_pixels(slow_images, ds["paths"][-1]))


def test_leftovers_of_dead_processes_are_removed_live_ones_kept(images, workdir):
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = f"{shm.PREFIX}-deadbeef-s0-p{dead.pid}-b0"
    live = f"{shm.PREFIX}-deadbeef-s0-p{os.getpid()}-b0"
    shm.create(stale, (4,))
    shm.create(live, (4,))
    try:
        snakemake(workdir, images_dir=images, shards=1)
        assert stale not in shm.ours()
        assert live in shm.ours()
    finally:
        shm.delete(stale)
        shm.delete(live)


def test_two_runs_at_once_in_different_directories(slow_images, tmp_path):
    """Two runs on the same images in two working directories, their shard jobs decoding at the same
    time: segment names carry a tag of the output path and the owning pid, so neither touches the other's."""
    dirs = [tmp_path / "one", tmp_path / "two"]
    procs = []
    for d in dirs:
        d.mkdir()
        procs.append(start(d, images_dir=slow_images, shards=1, workers=1))
    owners = {wait_for_workers(proc)[0].pid for proc in procs}
    assert len(owners) == 2  # both shard jobs had their workers decoding at once
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
    a, b = (read_dataset(d / "results/dataset.h5") for d in dirs)
    assert a["paths"] == b["paths"] and (a["images"] == b["images"]).all()
    np.testing.assert_array_equal(a["images"][5], reference_pixels(slow_images, a["paths"][5]))


def test_run_killed_hard_leaves_segments_that_the_next_run_removes(slow_images, workdir):
    proc = start(workdir, images_dir=slow_images, shards=1, workers=1)
    owner, workers = wait_for_workers(proc)
    segments = [n for n in shm.ours() if f"-p{owner.pid}-" in n]
    os.killpg(proc.pid, signal.SIGKILL)  # nothing gets to clean up
    proc.communicate(timeout=30)
    psutil.wait_procs([owner, *workers], timeout=10)
    # The leak a hard kill leaves (a shard job of a test running beside this one may remove it first:
    # that is what every shard job does with segments whose owner is gone).
    assert segments and not psutil.pid_exists(owner.pid)
    assert not list(workdir.rglob("*.h5"))  # but no shard index or part a rerun would trust
    # Python's own named semaphores (sem.mp-*, 32 bytes) die with their resource tracker; nothing can
    # tell whose they are, and a process of a test running beside this one may be using its own: left.

    snakemake(workdir, "--unlock", images_dir=slow_images, shards=1, workers=1)  # snakemake's own lock
    snakemake(workdir, "--rerun-incomplete", images_dir=slow_images, shards=1, workers=1)
    assert not set(segments) & set(shm.ours())
    assert not list(workdir.rglob("*.tmp-*"))
    assert len(read_dataset(workdir / "results/dataset.h5")["paths"]) == SLOW


def noisy(path: Path, seed: int) -> None:
    """A new version of a slow image: noise of the same size, slow to decode."""
    noise = np.random.default_rng(seed).integers(0, 256, (1200, 1800, 3), dtype=np.uint8)
    cv2.imwrite(str(path), noise, [cv2.IMWRITE_JPEG_QUALITY, 95])


@pytest.mark.parametrize("how", ["kill-9", "ctrl-c"])
@pytest.mark.parametrize("changed", [4, 20], ids=["few-changed", "many-changed"])
def test_an_interrupted_rerun_loses_nothing_and_the_next_run_completes_it(slow_images, workdir, how, changed):
    """A rerun stopped while its shard job decodes: for few changed images a small part was being
    written, for many a fresh one. Whatever the stop left, the next run gives the dataset a fresh build
    gives, image by image."""
    config = dict(images_dir=slow_images, shards=1, workers=1)
    snakemake(workdir, **config)
    for k in range(changed):
        noisy(slow_images / f"img{k:03d}.jpg", seed=500 + k)
    proc = start(workdir, **config)
    owner, workers = wait_for_workers(proc)
    os.killpg(proc.pid, signal.SIGKILL if how == "kill-9" else signal.SIGINT)
    proc.communicate(timeout=60)
    psutil.wait_procs([owner, *workers], timeout=10)
    if how == "kill-9":
        snakemake(workdir, "--unlock", **config)  # snakemake's own lock
    snakemake(workdir, "--rerun-incomplete", **config)
    ds = read_dataset(workdir / "results/dataset.h5")
    # what a fresh build stores: every image in list order, its digest, its pixels as cv2 reads them
    assert ds["paths"] == [f"img{k:03d}.jpg" for k in range(SLOW)]
    assert ds["sha256"] == [hashlib.sha256((slow_images / p).read_bytes()).hexdigest() for p in ds["paths"]]
    for i, rel in enumerate(ds["paths"]):
        np.testing.assert_array_equal(ds["images"][i], reference_pixels(slow_images, rel), err_msg=rel)
    assert not list(workdir.rglob("*.tmp-*"))  # a killed job's temporary part went with the next run
    for name in shm.ours():  # segments a hard kill left behind: the next run removed them
        assert f"-p{owner.pid}-" not in name
