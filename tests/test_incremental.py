"""Reruns redo only the shards whose images changed (Snakemake's default rerun triggers)."""

from __future__ import annotations

import os

import pytest

from imgshard.shard import shard_of
from tests.conftest import jobs_run, make_images, read_dataset, reference_pixels, snakemake, write_image

SHARDS = 4


@pytest.fixture
def built(tmp_path):
    images = tmp_path / "images"
    make_images(images, 16)
    work = tmp_path / "work"
    work.mkdir()
    snakemake(work, images_dir=images, shards=SHARDS)
    return images, work


def rerun(work, images, **config):
    proc = snakemake(work, images_dir=images, shards=SHARDS, **config)
    return proc.stdout, read_dataset(work / "results/dataset.h5")


def test_nothing_changed_does_nothing(built):
    images, work = built
    dataset = work / "results/dataset.h5"
    before = dataset.stat().st_mtime_ns
    out, _ = rerun(work, images)
    assert "Nothing to be done" in out
    assert jobs_run(out, "decode_shard") == 0 and jobs_run(out, "gather") == 0
    assert dataset.stat().st_mtime_ns == before


def test_changed_image_redoes_its_shard_only(built):
    images, work = built
    write_image(images / "img0005.jpg", seed=12345)  # new content, same size
    out, ds = rerun(work, images)
    assert jobs_run(out, "decode_shard") == 1 and jobs_run(out, "gather") == 1
    assert f"wildcards: dataset=dataset, shard={shard_of('img0005.jpg', SHARDS):03d}" in out
    i = ds["paths"].index("img0005.jpg")
    assert (ds["images"][i] == reference_pixels(images, "img0005.jpg")).all()


def test_added_image_redoes_its_shard_only(built):
    images, work = built
    write_image(images / "sub/new.jpg", seed=777)
    out, ds = rerun(work, images)
    assert jobs_run(out, "decode_shard") == 1 and jobs_run(out, "gather") == 1
    assert f"wildcards: dataset=dataset, shard={shard_of('sub/new.jpg', SHARDS):03d}" in out
    assert len(ds["paths"]) == 17 and "sub/new.jpg" in ds["paths"]
    assert (ds["images"][ds["paths"].index("sub/new.jpg")] == reference_pixels(images, "sub/new.jpg")).all()


def test_removed_image_redoes_its_shard_only(built):
    images, work = built
    os.unlink(images / "img0007.jpg")
    out, ds = rerun(work, images)
    assert jobs_run(out, "decode_shard") == 1 and jobs_run(out, "gather") == 1
    assert len(ds["paths"]) == 15 and "img0007.jpg" not in ds["paths"]
    for i, rel in enumerate(ds["paths"]):
        assert (ds["images"][i] == reference_pixels(images, rel)).all(), rel


def test_setting_that_changes_pixels_redoes_every_shard(built):
    images, work = built
    out, ds = rerun(work, images, compression="lzf")
    assert jobs_run(out, "decode_shard") == SHARDS and jobs_run(out, "gather") == 1
    assert len(ds["paths"]) == 16


def test_setting_that_keeps_pixels_redoes_no_shard(built):
    images, work = built
    out, _ = rerun(work, images, workers=1, shm_budget_mb=64, start_method="spawn", reuse=False)
    assert jobs_run(out, "decode_shard") == 0


# --- reuse: a rerun shard copies its unchanged rows from its previous file ---


def shard_log(work, rel: str) -> str:
    return (work / f"logs/decode_shard/dataset/{shard_of(rel, SHARDS):03d}.log").read_text()


def reused(work, rel: str) -> tuple[int, int]:
    """(images, reused) of the shard ``rel`` falls in, from its log's summary line."""
    import re

    m = re.search(r"^shard \d+: (\d+) images \((\d+) reused\)", shard_log(work, rel), flags=re.M)
    return int(m.group(1)), int(m.group(2))


def assert_same_as_fresh_build(tmp_path, images, ds, shards=SHARDS, name="fresh", **config):
    fresh = tmp_path / name
    fresh.mkdir()
    snakemake(fresh, images_dir=images, shards=shards, **config)
    want = read_dataset(fresh / "results/dataset.h5")
    assert ds["paths"] == want["paths"]
    assert ds["sha256"] == want["sha256"]
    assert (ds["original_size"] == want["original_size"]).all()
    assert (ds["images"] == want["images"]).all()


@pytest.fixture
def two_shards(tmp_path):
    """24 images built in 2 shards: (images, work, shard folder, shard 0's images sorted, shard 0's inode)."""
    images = tmp_path / "images"
    rels = make_images(images, 24)
    work = tmp_path / "work"
    work.mkdir()
    snakemake(work, images_dir=images, shards=2)
    shards = work / "results/dataset.shards"
    in_shard_0 = sorted(r for r in rels if shard_of(r, 2) == 0)
    return images, work, shards, in_shard_0, os.stat(shards / "previous/shard-000.h5").st_ino


@pytest.mark.parametrize("change", ["changed", "added", "removed", "touched"])
def test_rerun_copies_unchanged_rows_and_equals_a_fresh_build(built, tmp_path, change):
    images, work = built
    rel = {"changed": "img0005.jpg", "added": "sub/new.jpg", "removed": "img0007.jpg", "touched": "img0004.jpg"}[change]
    others = sum(1 for p in images.rglob("*.jpg") if shard_of(p.relative_to(images).as_posix(), SHARDS) == shard_of(rel, SHARDS))
    if change == "changed":
        write_image(images / rel, seed=12345)
    elif change == "added":
        write_image(images / rel, seed=777)
    elif change == "removed":
        os.unlink(images / rel)
    else:
        st = os.stat(images / rel)
        os.utime(images / rel, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    out, ds = rerun(work, images)
    assert jobs_run(out, "decode_shard") == 1
    kept, copied = reused(work, rel)
    # Every other image of the shard is copied; the changed, new or touched one is decoded.
    expected = {"changed": others - 1, "added": others, "removed": others - 1, "touched": others - 1}[change]
    assert copied == expected and kept == copied + (change != "removed")
    assert_same_as_fresh_build(tmp_path, images, ds)


def test_rerun_after_a_pixel_setting_changed_reuses_nothing(built, tmp_path):
    images, work = built
    out, ds = rerun(work, images, image_size="[24,32]")
    assert jobs_run(out, "decode_shard") == SHARDS
    assert "built with other settings; decoding every image" in shard_log(work, "img0001.jpg")
    assert reused(work, "img0001.jpg")[1] == 0
    assert_same_as_fresh_build(tmp_path, images, ds, image_size="[24,32]")


def test_reuse_false_decodes_every_image_of_a_rerun_shard(built):
    images, work = built
    write_image(images / "img0005.jpg", seed=4242)
    out, ds = rerun(work, images, reuse="false")
    assert reused(work, "img0005.jpg")[1] == 0
    i = ds["paths"].index("img0005.jpg")
    assert (ds["images"][i] == reference_pixels(images, "img0005.jpg")).all()


def test_previous_files_are_links_to_the_shard_files_not_copies(built):
    _, work = built
    shards = work / "results/dataset.shards"
    for shard in sorted(shards.glob("shard-*.h5")):
        assert os.path.samefile(shard, shards / "previous" / shard.name)


@pytest.mark.parametrize("changed", [1, 5])
def test_few_changed_rows_are_written_over_the_previous_file(tmp_path, two_shards, changed):
    """One changed image of a shard's eight: its row is overwritten in the previous file (the same
    inode becomes the new shard file); five of eight: a new file with the other rows copied."""
    images, work, shards, in_shard_0, inode = two_shards
    for k, rel in enumerate(in_shard_0[:changed]):
        write_image(images / rel, seed=9000 + k)
    snakemake(work, images_dir=images, shards=2)
    log = (work / "logs/decode_shard/dataset/000.log").read_text()
    assert f"{len(in_shard_0)} images ({len(in_shard_0) - changed} reused)" in log
    same_file = os.stat(shards / "shard-000.h5").st_ino == inode
    assert same_file == (changed == 1) and ("(in place)" in log) == (changed == 1)
    assert os.path.samefile(shards / "shard-000.h5", shards / "previous/shard-000.h5")
    assert not list(shards.glob("*.tmp-*")) and not list((shards / "previous").glob("*.tmp-*"))
    assert_same_as_fresh_build(tmp_path, images, read_dataset(work / "results/dataset.h5"), shards=2)


def test_added_and_removed_images_go_in_place_into_free_rows(tmp_path, two_shards):
    """Added and removed images of a shard change its file in place: an added one takes a
    row an image left (zeroed when it left) or a new row at the end, and the dataset still
    lists the images as a fresh build does, virtual or copied."""
    import h5py

    images, work, shards, in_shard_0, inode = two_shards
    news = [f"new{k:03d}.jpg" for k in range(200) if shard_of(f"new{k:03d}.jpg", 2) == 0][:2]

    def step(gather="virtual"):
        snakemake(work, images_dir=images, shards=2, gather=gather)
        log = (work / "logs/decode_shard/dataset/000.log").read_text()
        assert "(in place)" in log and os.stat(shards / "shard-000.h5").st_ino == inode
        with h5py.File(shards / "shard-000.h5", "r") as f:
            return dict(zip(f["paths"].asstr()[()], f["slots"][()].tolist())), f["images"][()]

    n = len(in_shard_0)
    write_image(images / news[0], seed=501)  # added: no free row yet, so one at the end
    slots, rows = step()
    assert slots[news[0]] == n and len(rows) == n + 1
    gone = in_shard_0[3]
    os.unlink(images / gone)  # removed: its row is zeroed and left free
    slots, rows = step()
    assert gone not in slots and not rows[3].any() and sorted(slots.values()) == [r for r in range(n + 1) if r != 3]
    write_image(images / news[1], seed=502)  # added and changed: into the rows the removed
    write_image(images / in_shard_0[5], seed=503)  # image and the changed one's old pixels leave
    slots, rows = step(gather="copy")
    assert {slots[news[1]], slots[in_shard_0[5]]} == {3, 5} and len(rows) == n + 1
    for k, rel in enumerate(in_shard_0[4:]):  # many changed: a fresh file, its unchanged rows copied from their slots
        write_image(images / rel, seed=600 + k)
    snakemake(work, images_dir=images, shards=2)
    assert os.stat(shards / "shard-000.h5").st_ino != inode
    for gather in ("copy", "virtual"):
        snakemake(work, images_dir=images, shards=2, gather=gather)
        ds = read_dataset(work / "results/dataset.h5")
        assert_same_as_fresh_build(tmp_path, images, ds, shards=2, name=f"fresh-{gather}", gather=gather)


def test_many_removed_images_make_a_fresh_file_without_empty_rows(two_shards):
    """More than a quarter of a shard's rows left empty: a fresh file in list order instead."""
    import h5py

    images, work, shards, in_shard_0, inode = two_shards
    for rel in in_shard_0[: len(in_shard_0) // 2]:
        os.unlink(images / rel)
    snakemake(work, images_dir=images, shards=2)
    assert os.stat(shards / "shard-000.h5").st_ino != inode
    with h5py.File(shards / "shard-000.h5", "r") as f:
        assert f["slots"][()].tolist() == list(range(len(in_shard_0) - len(in_shard_0) // 2)) == list(range(len(f["images"])))
