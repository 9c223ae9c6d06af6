"""Shard manifests: Snakemake tracks one file per shard, and every change to an image still reaches its shard."""

from __future__ import annotations

import os
import threading
import time

import cv2

from imgshard.plan import manifest
from imgshard.plan.shard import shard_of
from tests.conftest import jobs_run, make_images, snakemake, write_image

SHARDS = 4


def test_a_shard_job_tracks_its_manifest_not_its_images(images, workdir):
    proc = snakemake(workdir, images_dir=images, shards=SHARDS)
    inputs = [ln.strip() for ln in proc.stdout.splitlines() if ln.strip().startswith("input: ")]
    assert len(inputs) >= SHARDS
    for line in inputs:
        assert ".jpg" not in line
    shard_inputs = [ln for ln in inputs if "manifest-" in ln]
    assert sorted(shard_inputs) == [f"input: results/dataset.shards/manifest-{i:03d}.tsv" for i in range(SHARDS)]
    listed = [e.path for i in range(SHARDS) for e in manifest.read(str(workdir / f"results/dataset.shards/manifest-{i:03d}.tsv"))]
    assert sorted(listed) == sorted(str(p.relative_to(images)) for p in images.rglob("*.jpg"))


def test_a_manifest_is_rewritten_only_when_its_shard_changes(images, workdir):
    snakemake(workdir, images_dir=images, shards=SHARDS)
    folder = workdir / "results/dataset.shards"
    before = {p.name: p.stat().st_mtime_ns for p in folder.glob("manifest-*.tsv")}
    write_image(images / "img0004.jpg", seed=999)
    proc = snakemake(workdir, images_dir=images, shards=SHARDS)
    after = {p.name: p.stat().st_mtime_ns for p in folder.glob("manifest-*.tsv")}
    changed = sorted(name for name in before if after[name] != before[name])
    assert changed == [f"manifest-{shard_of('img0004.jpg', SHARDS):03d}.tsv"]
    assert jobs_run(proc.stdout, "decode_shard") == 1


def test_touch_redoes_the_shard_of_the_touched_image(images, workdir):
    snakemake(workdir, images_dir=images, shards=SHARDS)
    st = (images / "img0005.jpg").stat()
    os.utime(images / "img0005.jpg", ns=(st.st_atime_ns, st.st_mtime_ns - 10**10))  # the same bytes, another mtime
    proc = snakemake(workdir, images_dir=images, shards=SHARDS)
    assert jobs_run(proc.stdout, "decode_shard") == 1
    assert f"shard={shard_of('img0005.jpg', SHARDS):03d}" in proc.stdout


def test_an_edit_that_keeps_the_size_still_redoes_its_shard(images, workdir):
    snakemake(workdir, images_dir=images, shards=SHARDS)
    path = images / "img0002.jpg"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte of entropy-coded data: same size, other pixels
    path.write_bytes(bytes(data))
    proc = snakemake(workdir, images_dir=images, shards=SHARDS)
    assert jobs_run(proc.stdout, "decode_shard") == 1


def test_a_changed_size_is_probed_again_when_sizes_must_agree(images, workdir):
    snakemake(workdir, images_dir=images, shards=SHARDS)
    write_image(images / "img0003.jpg", seed=3, height=50, width=64)
    proc = snakemake(workdir, check=False, images_dir=images, shards=SHARDS)
    assert proc.returncode != 0
    assert "img0003.jpg is 50x64" in proc.stdout


class _WaitingClock:
    """The time module as the scan uses it, telling the test when the scan starts to wait for a racy file."""

    def __init__(self):
        self.waiting = threading.Event()

    def time_ns(self) -> int:
        return time.time_ns()

    def sleep(self, seconds: float) -> None:
        self.waiting.set()
        time.sleep(seconds)


def test_a_freshly_written_file_is_stated_only_once_it_is_old_enough(tmp_path, monkeypatch):
    """A file edited twice within one tick of the clock keeps one mtime: the scan must not
    record it until any later edit is bound to move its mtime, and must see the last edit."""
    path = tmp_path / "a.jpg"
    write_image(path, seed=1)
    result = {}
    clock = _WaitingClock()
    monkeypatch.setattr(manifest, "time", clock)

    def scan():
        result["stats"] = manifest.stat_all(str(tmp_path), ["a.jpg"])[0]
        result["done"] = time.time()

    thread = threading.Thread(target=scan)
    thread.start()
    assert clock.waiting.wait(timeout=60)  # the scan has looked once, found the file racy, and waits
    write_image(path, seed=2, height=60, width=80)  # the second edit, while the scan waits
    thread.join()
    size, mtime_ns = result["stats"]["a.jpg"]
    assert (size, mtime_ns) == (path.stat().st_size, path.stat().st_mtime_ns)
    assert mtime_ns / 1e9 <= result["done"] - manifest.RACY_SECONDS + 0.01


def test_manifest_round_trip(tmp_path):
    items = [manifest.Entry("a b/ü.jpg", 123, 456789, (48, 64)), manifest.Entry("c.png", 1, 2, None)]
    path = str(tmp_path / "m.tsv")
    assert manifest.write_if_changed(path, manifest.render(items))
    assert manifest.read(path) == items
    assert not manifest.write_if_changed(path, manifest.render(items))
    assert manifest.read(str(tmp_path / "missing.tsv")) == []


def test_only_new_or_changed_files_have_their_header_read(tmp_path):
    """A header size in the previous manifest is reused while path, size and mtime match."""
    make_images(tmp_path, 3)
    rels = ["img0001.jpg", "img0002.jpg"]
    stats = manifest.stat_all(str(tmp_path), rels)[0]
    first = manifest.shard_text(str(tmp_path), rels, stats, "", headers=True)
    assert list(manifest.header_sizes(first)) == [("img0001.jpg", (48, 64)), ("img0002.jpg", (48, 64))]
    planted = first.replace("\t48\t64", "\t1\t1")  # what an earlier run read, as far as the scan can tell
    again = manifest.shard_text(str(tmp_path), rels, stats, planted, headers=True)
    assert again == planted  # taken from the manifest, not read again
    cv2.imwrite(str(tmp_path / "img0002.jpg"), cv2.imread(str(tmp_path / "img0002.jpg"))[:40])
    stats = manifest.stat_all(str(tmp_path), rels)[0]
    changed = manifest.shard_text(str(tmp_path), rels, stats, planted, headers=True)
    assert list(manifest.header_sizes(changed)) == [("img0001.jpg", (1, 1)), ("img0002.jpg", (40, 64))]


def test_a_header_without_a_size_is_looked_at_once(tmp_path):
    from tests.images import every_format

    path = every_format(tmp_path)["tiff"]
    rel = path.name
    stats = manifest.stat_all(str(tmp_path), [rel])[0]
    text = manifest.shard_text(str(tmp_path), [rel], stats, "", headers=True)
    assert text.endswith("\t0\t0\n") and list(manifest.header_sizes(text)) == [(rel, None)]
