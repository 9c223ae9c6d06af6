"""A Docker-sized /dev/shm, for real: snakemake in a mount namespace of its own with a small tmpfs on
/dev/shm, several shard jobs at once. They share what is really free and build in smaller batches; when
not even one row per job fits, every job stops with the one line that names --shm-size.

Mounting needs root (CI runs as root); the namespace's /dev/shm goes with it.
"""

from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest

from tests.conftest import make_images, mount_refused, read_dataset, reference_pixels, snakemake_cmd

REFUSED = mount_refused(namespace=True)
pytestmark = pytest.mark.skipif(REFUSED is not None, reason=str(REFUSED))


def in_small_shm(size_mb: int, workdir, *args: str, **config) -> subprocess.CompletedProcess:
    snakemake = snakemake_cmd(workdir, *args, **config)
    script = f'mount -t tmpfs -o size={size_mb}m tmpfs /dev/shm && exec "$@"'
    cmd = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *snakemake]
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)


def test_jobs_side_by_side_share_a_small_dev_shm_and_build_in_smaller_batches(tmp_path, workdir):
    images = tmp_path / "images"
    make_images(images, 160, height=256, width=256)  # 0.19 MB a row, 80 a shard
    # Each job alone would size its buffers to the 3 MB it sees free (2 x 7 rows): together past the
    # end of /dev/shm, a SIGBUS. Sharing it, each takes half.
    proc = in_small_shm(3, workdir, images_dir=images, shards=2)
    assert proc.returncode == 0, proc.stdout[-3000:]
    logs = [p.read_text() for p in sorted((workdir / "logs/decode_shard/dataset").glob("*.log"))]
    buffers = [re.search(r"\(1 workers, (\d+) x (\d+)-image buffers", log).groups() for log in logs]
    assert len(buffers) == 2 and all(int(k) * int(rows) * 256 * 256 * 3 <= 1.5 * 2**20 for k, rows in buffers), buffers
    ds = read_dataset(workdir / "results/dataset.h5")
    assert len(ds["paths"]) == 160
    for i in range(0, 160, 7):
        np.testing.assert_array_equal(ds["images"][i], reference_pixels(images, ds["paths"][i]))


def test_when_not_one_row_per_job_fits_every_job_stops_with_one_line(tmp_path, workdir):
    images = tmp_path / "images"
    make_images(images, 8, height=700, width=1050)  # 2.2 MB a row: 1.5 MB for each of two jobs
    proc = in_small_shm(3, workdir, "--keep-going", images_dir=images, shards=2)
    assert proc.returncode != 0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("imgshard: /dev/shm")]
    assert len(lines) == 2, proc.stdout[-3000:]
    for line in lines:
        assert re.fullmatch(
            r"imgshard: /dev/shm has \d MB free, \d MB for each of the 2 shard jobs that run at once, but one image needs 3 MB:"
            r" free some, raise its size \(docker run --shm-size=12m\), or run fewer jobs at once \(--cores\)",
            line,
        ), line
    assert "Traceback" not in proc.stdout and "unexpected error" not in proc.stdout
    assert not (workdir / "results/dataset.h5").exists() and not list(workdir.rglob("*.tmp-*"))
