"""Killed workers, signals to snakemake, leftovers of hard-killed runs, concurrent runs.

Each run is held mid-decode by a gate (conftest.Gate: a FIFO named like an image, which blocks the
worker that opens it) for as long as the test acts, whatever the speed of the machine."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import psutil
import pytest

from imgshard import shm
from tests.conftest import Gate, jpeg_bytes, read_dataset, read_shard, reference_pixels, snakemake, snakemake_cmd, wait_until, write_image


COUNT = 12  # images in a gated folder, its gate among them
SIZE = (120, 160)
# image_size set: the scan reads no header, so only a shard job's worker ever opens the gate.
CONFIG = dict(shards=1, workers=1, image_size=f"[{SIZE[0]},{SIZE[1]}]")


def gated_folder(folder: Path, seed: int = 0) -> Gate:
    """COUNT images in ``folder``; the last (the smallest file: decoded last) is a gate."""
    for i in range(COUNT - 1):
        write_image(folder / f"img{i:03d}.jpg", seed * 100 + i, *SIZE)
    return Gate(folder / f"img{COUNT - 1:03d}.jpg", jpeg_bytes(seed * 100 + 99, *SIZE))


@pytest.fixture
def gated(tmp_path) -> tuple[Path, Gate]:
    folder = tmp_path / "gated"
    return folder, gated_folder(folder)


def start(workdir: Path, **config) -> subprocess.Popen:
    return subprocess.Popen(
        snakemake_cmd(workdir, cores=1, **config), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )


def mid_decode(proc: subprocess.Popen, gate: Gate) -> tuple[psutil.Process, list[psutil.Process]]:
    """Once the shard job's worker is held at the gate: the job's parent and its workers."""
    gate.wait_until_opened()
    return wait_for_workers(proc)


def wait_for_workers(proc: subprocess.Popen, timeout: float = 60) -> tuple[psutil.Process, list[psutil.Process]]:
    """The shard job's parent (owner of a new segment) and its workers (the others that map it)."""

    def started():
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
        return None

    return wait_until(started, "the shard job starting its workers", timeout)


def maps(proc: psutil.Process, segment: str) -> bool:
    try:
        return any(m.path.endswith("/" + segment) for m in proc.memory_maps())
    except psutil.Error:
        return False


def assert_nothing_half_written(workdir: Path) -> None:
    assert not list(workdir.rglob("*.h5")), "no shard may be written when its job failed"
    assert not list(workdir.rglob("*.tmp-*"))


def test_killed_worker_fails_the_job_quickly_and_a_rerun_completes(gated, workdir):
    images, gate = gated
    proc = start(workdir, images_dir=images, **CONFIG)
    owner, workers = mid_decode(proc, gate)
    workers[0].send_signal(signal.SIGKILL)
    out, _ = proc.communicate(timeout=60)  # a hang fails here
    assert proc.returncode != 0
    assert "imgshard: shard 0: a worker process died" in out
    assert not owner.is_running()
    assert_nothing_half_written(workdir)

    gate.replace()
    snakemake(workdir, "--rerun-incomplete", images_dir=images, **CONFIG)
    ds = read_dataset(workdir / "results/dataset.h5")
    assert len(ds["paths"]) == COUNT
    for i in (7, COUNT - 1):
        np.testing.assert_array_equal(ds["images"][i], reference_pixels(images, ds["paths"][i]))


@pytest.mark.parametrize(
    "sig, group",
    [
        (signal.SIGTERM, False),  # snakemake alone: it lets running jobs finish, then stops
        (signal.SIGINT, True),  # Ctrl-C in a terminal: the whole process group
        (signal.SIGTERM, True),  # a batch system ending the job: the whole group
    ],
    ids=["sigterm-snakemake", "ctrl-c", "sigterm-group"],
)
def test_signal_leaves_no_half_written_file_and_no_shared_memory(gated, workdir, sig, group):
    images, gate = gated
    proc = start(workdir, images_dir=images, **CONFIG)
    owner, _ = mid_decode(proc, gate)
    if group:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
        # Snakemake waits for its running job to finish: let the held worker through, once the signal is in.
        wait_for_line(workdir / ".snakemake/log", "Will exit after finishing currently running jobs")
        gate.release()
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
        assert f"shard 0: {COUNT} images" in (workdir / "logs/decode_shard/dataset/000.log").read_text()
        assert len(read_shard(shard)["paths"]) == COUNT

    gate.replace()
    snakemake(workdir, "--rerun-incomplete", images_dir=images, **CONFIG)
    ds = read_dataset(workdir / "results/dataset.h5")
    assert len(ds["paths"]) == COUNT
    np.testing.assert_array_equal(ds["images"][-1], reference_pixels(images, ds["paths"][-1]))


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


def test_two_runs_at_once_in_different_directories(tmp_path):
    """Two runs on the same images in two working directories, their shard jobs decoding at the same
    time: segment names carry a tag of the output path and the owning pid, so neither touches the other's."""
    dirs = [tmp_path / "one", tmp_path / "two"]
    procs, gates = [], []
    for d in dirs:
        d.mkdir()
        gates.append(gated_folder(d / "images"))  # the same images in both
        procs.append(start(d, images_dir=d / "images", **CONFIG))
    owners = {mid_decode(proc, gate)[0].pid for proc, gate in zip(procs, gates)}
    assert len(owners) == 2  # both shard jobs held mid-decode at once
    for proc, gate in zip(procs, gates):
        gate.release()
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
    a, b = (read_dataset(d / "results/dataset.h5") for d in dirs)
    assert a["paths"] == b["paths"] and (a["images"] == b["images"]).all()
    for i in (5, COUNT - 1):
        np.testing.assert_array_equal(a["images"][i], reference_pixels(dirs[0] / "images", a["paths"][i]))


def test_run_killed_hard_leaves_segments_that_the_next_run_removes(gated, workdir):
    images, gate = gated
    proc = start(workdir, images_dir=images, **CONFIG)
    owner, workers = mid_decode(proc, gate)
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

    gate.replace()
    snakemake(workdir, "--unlock", images_dir=images, **CONFIG)  # snakemake's own lock
    snakemake(workdir, "--rerun-incomplete", images_dir=images, **CONFIG)
    assert not set(segments) & set(shm.ours())
    assert not list(workdir.rglob("*.tmp-*"))
    assert len(read_dataset(workdir / "results/dataset.h5")["paths"]) == COUNT


@pytest.mark.parametrize("how", ["kill-9", "ctrl-c"])
@pytest.mark.parametrize("changed", [2, 8], ids=["few-changed", "many-changed"])
def test_an_interrupted_rerun_loses_nothing_and_the_next_run_completes_it(gated, workdir, how, changed):
    """A rerun stopped while its shard job decodes: for few changed images (the gate among them) a
    small part was being written, for many a fresh one. The dataset published before it reads as it
    did, and the next run gives the dataset a fresh build gives, image by image."""
    images, gate = gated
    gate.replace()
    config = dict(images_dir=images, **CONFIG)
    snakemake(workdir, **config)
    published = read_dataset(workdir / "results/dataset.h5")
    for k in range(changed):
        write_image(images / f"img{k:03d}.jpg", seed=500 + k, height=SIZE[0], width=SIZE[1])
    os.unlink(gate.path)
    gate = Gate(gate.path, jpeg_bytes(599, *SIZE))  # changed too, and held
    proc = start(workdir, **config)
    owner, workers = mid_decode(proc, gate)
    os.killpg(proc.pid, signal.SIGKILL if how == "kill-9" else signal.SIGINT)
    proc.communicate(timeout=60)
    psutil.wait_procs([owner, *workers], timeout=10)
    # Nothing published was lost: the dataset still reads exactly as it did, every row.
    now = read_dataset(workdir / "results/dataset.h5")
    assert now["paths"] == published["paths"] and now["sha256"] == published["sha256"]
    np.testing.assert_array_equal(now["images"], published["images"])

    gate.replace()
    if how == "kill-9":
        snakemake(workdir, "--unlock", **config)  # snakemake's own lock
    snakemake(workdir, "--rerun-incomplete", **config)
    ds = read_dataset(workdir / "results/dataset.h5")
    # what a fresh build stores: every image in list order, its digest, its pixels as cv2 reads them
    assert ds["paths"] == [f"img{k:03d}.jpg" for k in range(COUNT)]
    assert ds["sha256"] == [hashlib.sha256((images / p).read_bytes()).hexdigest() for p in ds["paths"]]
    for i, rel in enumerate(ds["paths"]):
        np.testing.assert_array_equal(ds["images"][i], reference_pixels(images, rel), err_msg=rel)
    assert not list(workdir.rglob("*.tmp-*"))  # a killed job's temporary part went with the next run
    for name in shm.ours():  # segments a hard kill left behind: the next run removed them
        assert f"-p{owner.pid}-" not in name


def wait_for_line(log_dir: Path, text: str, timeout: float = 60) -> None:
    """Until snakemake's own log (in ``log_dir``) has a line with ``text``."""
    wait_until(lambda: any(text in p.read_text(errors="replace") for p in log_dir.glob("*.snakemake.log")), f"snakemake logging {text!r}", timeout)
