"""Progress you can see: one live line for the whole build in a terminal, a summary line per dataset at
the end of every run, and -q showing neither."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess

import cv2
import numpy as np

from tests.conftest import REPO, SNAKEMAKE, config_args, write_image


def in_a_terminal(cmd: list[str], timeout: float = 120) -> str:
    """Run ``cmd`` with a terminal for its output, as a person would; what it wrote."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(cmd, stdout=follower, stderr=follower, stdin=subprocess.DEVNULL, close_fds=True)
    os.close(follower)
    out = b""
    while True:
        ready, _, _ = select.select([leader], [], [], timeout)
        if not ready:
            proc.kill()
            raise AssertionError("no output for too long")
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(leader)
    assert proc.wait() == 0, out.decode()[-3000:]
    return out.decode(errors="replace")


def test_a_build_shows_one_live_line_and_ends_with_a_summary(tmp_path, workdir):
    images = tmp_path / "images"
    noise = np.random.default_rng(0).integers(0, 256, (1200, 1800, 3), dtype=np.uint8)
    images.mkdir()
    for k in range(30):  # about 2 s of decoding for one worker
        cv2.imwrite(str(images / f"img{k:03d}.jpg"), np.roll(noise, k, axis=1), [cv2.IMWRITE_JPEG_QUALITY, 95])
    cmd = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--cores", "1"]
    out = in_a_terminal(cmd + config_args(images_dir=images, shards=1, workers=1))
    # redrawn in place: each one clears the line it replaces
    lines = re.findall(r"\r\x1b\[Kimgshard: ([\d,]+) of 30 images \((\d+)%\), ([\d,]+) images/s", out)
    assert lines, out[-3000:]
    assert all(0 <= int(done) <= 30 for done, _, _ in lines)
    assert "imgshard: results/dataset.h5: 1 of 1 shards rebuilt: 30 images added, 0 changed, 0 removed; 30 decoded, 0 kept" in out

    write_image(images / "img003.jpg", seed=1, height=1200, width=1800)
    out = in_a_terminal(cmd + config_args(images_dir=images, shards=1, workers=1))
    assert "1 of 1 shards rebuilt: 0 images added, 1 changed, 0 removed; 1 decoded, 29 kept" in out
    out = in_a_terminal(cmd + config_args(images_dir=images, shards=1, workers=1))
    assert "imgshard: results/dataset.h5: up to date, no shard rebuilt" in out
    quiet = in_a_terminal(cmd + ["-q"] + config_args(images_dir=images, shards=1, workers=1))
    assert "imgshard:" not in quiet
