"""Progress you can see: one live line for the whole build in a terminal, a summary line per dataset at
the end of every run, and -q showing neither. The build is held at a gate (conftest.Gate) until the
live line has shown its count, whatever the speed of the machine."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess

from imgshard.plan.shard import shard_of
from tests.conftest import Gate, jpeg_bytes, make_images, snakemake, snakemake_cmd, write_image


def in_a_terminal(cmd: list[str], timeout: float = 120, when: tuple[str, object] | None = None) -> str:
    """Run ``cmd`` with a terminal for its output, as a person would; what it wrote.

    ``when``: (regex, action): the action runs once, as soon as the output matches.
    """
    leader, follower = pty.openpty()
    proc = subprocess.Popen(cmd, stdout=follower, stderr=follower, stdin=subprocess.DEVNULL, close_fds=True)
    os.close(follower)
    out = b""
    while True:
        ready, _, _ = select.select([leader], [], [], timeout)
        if not ready:
            proc.kill()
            raise AssertionError("no output for too long: " + out.decode(errors="replace")[-2000:])
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
        if when is not None and re.search(when[0], out.decode(errors="replace")):
            when[1]()
            when = None
    os.close(leader)
    assert proc.wait() == 0, out.decode()[-3000:]
    assert when is None, f"the output never matched {when[0]!r}"
    return out.decode(errors="replace")


SIZE = (120, 160)
LIVE = r"\r\x1b\[Kimgshard: ([\d,]+) of 30 images \((\d+)%\), ([\d,]+) images/s(?:, ([^\r\x1b]+) left)?"


def seconds(duration: str) -> int:
    """What progress._duration wrote, back in seconds."""
    numbers = [int(n) for n in re.findall(r"\d+", duration)]
    units = {"h": 3600, "min": 60, "s": 1}
    return sum(n * units[u] for n, u in zip(numbers, re.findall(r"[a-z]+", duration)))


def test_a_build_shows_one_live_line_and_ends_with_a_summary(tmp_path, workdir):
    images = tmp_path / "images"
    for k in range(1, 30):
        write_image(images / f"img{k:03d}.jpg", k, *SIZE)
    # The first image is held at a gate: the job decodes the rest of its first batch, then waits there
    # until the live line has shown a count with the time left, whatever the speed of the machine.
    gate = Gate(images / "img000.jpg", jpeg_bytes(0, *SIZE))
    config = dict(images_dir=images, shards=1, workers=1, image_size=f"[{SIZE[0]},{SIZE[1]}]")
    cmd = snakemake_cmd(workdir, cores=1, **config)
    out = in_a_terminal(cmd, when=(r"imgshard: [1-9]\d* of 30 images \(\d+%\), [1-9][\d,]* images/s, [^\r\x1b]+ left", gate.release))
    # redrawn in place: each one clears the line it replaces
    lines = re.findall(LIVE, out)
    shown = [int(done) for done, _, _, _ in lines]
    assert shown == sorted(shown) and any(0 < n < 30 for n in shown), shown  # it counts up, and showed the count while held
    checked = 0
    for done, percent, rate, left in lines:
        assert int(percent) == round(100 * int(done) / 30)
        if left and int(rate.replace(",", "")) >= 1:  # the time left is what is left at that rate
            r = int(rate.replace(",", ""))
            assert int((30 - int(done)) / (r + 0.5)) <= seconds(left) <= (30 - int(done)) / (r - 0.5) + 1, (done, rate, left)
            checked += 1
    assert checked
    assert "imgshard: results/dataset.h5: 1 of 1 shards rebuilt: 30 images added, 0 changed, 0 removed; 30 decoded, 0 kept" in out

    write_image(images / "img003.jpg", seed=1, height=SIZE[0], width=SIZE[1])
    # Decoded: img003 and the gate, now a plain file with the bytes it gave (a new mtime); changed: img003.
    out = in_a_terminal(cmd)
    assert "1 of 1 shards rebuilt: 0 images added, 1 changed, 0 removed; 2 decoded, 28 kept" in out
    os.unlink(images / "img004.jpg")
    out = in_a_terminal(cmd)
    assert "1 of 1 shards rebuilt: 0 images added, 0 changed, 1 removed; 0 decoded, 29 kept" in out
    out = in_a_terminal(cmd)
    assert "imgshard: results/dataset.h5: up to date, no shard rebuilt" in out

    # -q: a run that rebuilds shows neither the live line nor the summary.
    write_image(images / "img005.jpg", seed=2, height=SIZE[0], width=SIZE[1])
    quiet = in_a_terminal(snakemake_cmd(workdir, "-q", cores=1, **config))
    assert "shards rebuilt" not in quiet and "\x1b[K" not in quiet and not re.search(LIVE, quiet)
    assert json.loads((workdir / "results/dataset.shards/shard-000.json").read_text())["changed"] == 1  # it did rebuild


def test_a_run_of_several_datasets_ends_with_a_summary_line_for_each(tmp_path, workdir):
    for name, count in (("train", 5), ("test", 3)):
        make_images(tmp_path / name, count)
    (tmp_path / "run.yaml").write_text(
        f"datasets:\n  train:\n    images_dir: {tmp_path / 'train'}\n  test:\n    images_dir: {tmp_path / 'test'}\nshards: 2\n"
    )
    cmd = snakemake_cmd(workdir, "--configfile", str(tmp_path / "run.yaml"))
    out = in_a_terminal(cmd)
    assert "imgshard: results/train.h5: 2 of 2 shards rebuilt: 5 images added, 0 changed, 0 removed; 5 decoded, 0 kept" in out
    assert "imgshard: results/test.h5: 2 of 2 shards rebuilt: 3 images added, 0 changed, 0 removed; 3 decoded, 0 kept" in out
    write_image(tmp_path / "test/img0001.jpg", seed=9)
    out = in_a_terminal(cmd)
    assert "imgshard: results/train.h5: up to date, no shard rebuilt" in out
    assert re.search(r"imgshard: results/test\.h5: 1 of 2 shards rebuilt: 0 images added, 1 changed, 0 removed; 1 decoded, [01] kept", out)


def test_the_summary_counts_against_what_was_published_and_names_what_was_skipped(tmp_path, workdir):
    images = tmp_path / "images"
    rels = make_images(images, 24)
    (images / "broken.jpg").write_bytes(b"")  # skipped at every build
    same_shard = next(r for r in rels if shard_of(r, 4) == shard_of("broken.jpg", 4))

    # A first run that fails (on_error: fail): the shards without the broken file finish, nothing is published.
    failed = snakemake(workdir, "--keep-going", check=False, images_dir=images, shards=4)
    assert failed.returncode != 0 and not (workdir / "results/dataset.h5").exists()
    out = snakemake(workdir, images_dir=images, shards=4, on_error="skip").stdout
    line = re.search(r"imgshard: results/dataset\.h5: 4 of 4 shards rebuilt: (.*)", out).group(1)
    decoded, kept = map(int, re.search(r"(\d+) decoded, (\d+) kept from an unfinished run, 1 skipped \(broken\.jpg\)", line).groups())
    assert line.startswith("24 images added, 0 changed, 0 removed;") and decoded + kept == 24 and kept > 0, line

    # One good image of the broken file's shard changes: nothing was added, the broken file is named as skipped.
    write_image(images / same_shard, seed=4321)
    out = snakemake(workdir, images_dir=images, shards=4, on_error="skip").stdout
    assert re.search(
        r"imgshard: results/dataset\.h5: 1 of 4 shards rebuilt: 0 images added, 1 changed, 0 removed; 1 decoded, \d+ kept, 1 skipped \(broken\.jpg\)",
        out,
    ), out[-2000:]
