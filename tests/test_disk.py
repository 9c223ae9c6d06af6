"""A full disk: stopped before decoding when clearly too small, one clean line when it fills anyway.

The small disk is a real tmpfs the test mounts, so these run as root (CI does).
"""

from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest

from imgshard import shm
from imgshard.build.index import read_index
from tests.conftest import REPO, jobs_run, make_images, mount_refused, read_dataset, reference_pixels, snakemake

REFUSED = mount_refused()
pytestmark = pytest.mark.skipif(REFUSED is not None, reason=str(REFUSED))


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB filesystem of its own."""
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


@pytest.fixture
def many(tmp_path):
    """60 images of 120x160: 3.5 MB of pixels, more than the small disk holds."""
    folder = tmp_path / "many"
    make_images(folder, 60, height=120, width=160)
    return folder


def leftovers(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_a_disk_clearly_too_small_stops_the_run_before_decoding(small_disk, many, workdir):
    before = set(shm.ours())
    proc = snakemake(workdir, check=False, images_dir=many, output=small_disk / "results/dataset.h5", shards=2)
    assert proc.returncode != 0
    assert f"{small_disk}/results/: needs about 3.5 MB, 2.1 MB free" in proc.stdout, proc.stdout[-2000:]
    assert "check_disk_space: false builds anyway" in proc.stdout
    assert jobs_run(proc.stdout, "decode_shard") == 0
    # Only the scan's own record of what it saw (a few bytes a shard), no dataset, shard or temporary file.
    assert [f for f in leftovers(small_disk) if "/manifest-" not in f] == [] and set(shm.ours()) == before


def test_a_disk_that_fills_anyway_is_one_line_naming_the_file_and_leaves_nothing(small_disk, many, workdir):
    proc = snakemake(
        workdir, "--keep-going", check=False, images_dir=many, output=small_disk / "dataset.h5", shards=2, check_disk_space=False
    )
    assert proc.returncode != 0
    failures = [ln for ln in proc.stdout.splitlines() if ln.startswith("imgshard: ") and "disk full" in ln]
    assert failures, proc.stdout[-3000:]
    for line in failures:
        # The part file, or (two jobs run side by side) the index or stats file of a shard whose part just fit.
        assert re.search(r"dataset\.shards/(parts/00\d-[0-9a-f]{12}\.h5|shard-00\d\.(h5|json)): disk full", line), line
        assert "free" in line or ".json" in line, line
    assert "Traceback" not in proc.stdout and "unexpected error" not in proc.stdout
    # At most one shard fits: whatever failed left no temporary file and no half-written shard.
    assert [f for f in leftovers(small_disk) if ".tmp-" in f] == []
    # Whatever part is there, a finished index names it: nothing half-written to trust.
    named = {p for index in (small_disk / "dataset.shards").glob("shard-*.h5") for p in read_index(str(index)).parts}
    assert {f.removeprefix("dataset.shards/") for f in leftovers(small_disk) if "/parts/" in f} <= named
    assert not (small_disk / "dataset.h5").exists()


def test_a_rerun_that_fills_the_disk_loses_nothing_published(small_disk, tmp_path, workdir):
    """The disk fills while a rerun writes its part: the dataset a reader opens stays the one last
    published, every row of it readable, and no half-written file is left."""
    images = tmp_path / "few"
    make_images(images, 8, height=120, width=160)  # 0.46 MB of pixels: fits
    config = dict(images_dir=images, output=small_disk / "dataset.h5", shards=1, check_disk_space=False)
    snakemake(workdir, **config)
    before = read_dataset(small_disk / "dataset.h5")
    make_images(images / "more", 40, height=120, width=160, seed=5)  # 2.3 MB more: a fresh part of 2.8 MB does not fit
    proc = snakemake(workdir, check=False, **config)
    assert proc.returncode != 0 and "disk full" in proc.stdout, proc.stdout[-3000:]
    after = read_dataset(small_disk / "dataset.h5")
    assert after["paths"] == before["paths"] and len(after["paths"]) == 8
    for i, rel in enumerate(after["paths"]):
        np.testing.assert_array_equal(after["images"][i], reference_pixels(images, rel), err_msg=rel)
    assert [f for f in leftovers(small_disk) if ".tmp-" in f] == []


def run_as_job(log, fill: str) -> subprocess.CompletedProcess:
    """Run the source of a function ``fill`` as a shard job does, in a Python of its own.

    HDF5 can crash while freeing a file whose write failed (h5py#914): only a
    process of its own shows that the job still ends with its one line.
    """
    code = f"""
import shutil, sys
import numpy as np
sys.path.insert(0, {str(REPO)!r})
from imgshard.build import part as write
from imgshard.steps.run import run_job

{fill}

run_job({str(log)!r}, fill)
"""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_hdf5_running_into_a_full_disk_is_one_line_and_no_crash(small_disk, tmp_path):
    """The disk fills between the free-space check and the write (another process, say): HDF5 itself fails.

    The job must end with its one line and status 1, not a segfault, and keep nothing.
    """
    proc = run_as_job(
        tmp_path / "job.log",
        f"""
write.SPACE_MARGIN = -(1 << 40)  # the check looks away, as if the disk filled after it looked


def fill():
    writer = write.PartWriter({str(small_disk)!r}, "000", 100, (120, 160), "none")
    try:
        writer.write(np.ones((100, 120, 160, 3), np.uint8), [(i, i) for i in range(100)])
        writer.finish()
    except BaseException:
        writer.abort()
        raise
""",
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert re.match(rf"imgshard: {small_disk}/parts/000-[0-9a-f]{{12}}\.h5: disk full \(No space left on device\), ", proc.stderr.strip())
    assert proc.stderr.strip().endswith(" free; nothing of it was kept")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert leftovers(small_disk) == []


def test_a_disk_that_fills_before_an_abandoned_shard_file_closes_is_one_line(small_disk, tmp_path):
    """A job gives up on its part file (here the free-space check refuses more rows) after the disk filled.

    Closing the file flushes what HDF5 still holds (its metadata) onto the
    full disk, and fails: it must still be the one line that names the file,
    and leave nothing behind.
    """
    log = tmp_path / "job.log"
    proc = run_as_job(
        log,
        f"""
def fill():
    writer = write.PartWriter({str(small_disk)!r}, "001", 20, (120, 160), "none")
    try:
        writer.write(np.ones((4, 120, 160, 3), np.uint8), [(i, i) for i in range(4)])
        with open({str(small_disk / "other")!r}, "wb") as other:  # another process takes what is left
            other.write(bytes(shutil.disk_usage({str(small_disk)!r}).free))
        writer.write(np.ones((4, 120, 160, 3), np.uint8), [(i, i + 4) for i in range(4)])
    except BaseException:
        writer.abort()
        raise
""",
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert re.match(rf"imgshard: {small_disk}/parts/001-[0-9a-f]{{12}}\.h5: disk full", proc.stderr.strip()), proc.stderr[-2000:] + log.read_text()[-2000:]
    assert len(proc.stderr.strip().splitlines()) == 1
    assert leftovers(small_disk) == ["other"]


def test_hdf5_failures_from_a_full_disk_are_told_apart_from_others(tmp_path):
    """h5py raises OSError for most failed writes, RuntimeError when a flush fails as it closes an object."""
    from imgshard.errors import DiskFull
    from imgshard.build.part import HDF5_WRITE_ERRORS, disk_full

    path = str(tmp_path / "shard-001.h5")
    # As h5py worded it when two shard jobs filled a disk side by side (a CI run of this project).
    closing = RuntimeError(
        "Can't decrement id ref count (file write failed: time = Tue Dec  1 21:12:14 2026\n, filename = "
        f"'{path}.tmp-20626', file descriptor = 12, errno = 28, error message = 'No space left on device', "
        "buf = 0x55a038018498, total write size = 7104, bytes this sub-write = 7104, offset = 458752)"
    )
    assert isinstance(closing, HDF5_WRITE_ERRORS)
    full = disk_full(path, closing)
    assert isinstance(full, DiskFull) and str(full).startswith(f"{path}: disk full (No space left on device), ")
    assert isinstance(disk_full(path, OSError(28, "No space left on device")), DiskFull)
    assert disk_full(path, RuntimeError("Can't decrement id ref count (wrong B-tree signature)")) is None
    assert disk_full(path, OSError(5, "Input/output error")) is None
