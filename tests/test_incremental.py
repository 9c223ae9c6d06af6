"""Reruns redo only the shards whose images changed (Snakemake's default rerun triggers)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import os

import pytest

from imgshard.build.index import read_index
from imgshard.plan.shard import shard_of
from tests.conftest import REPO, fresh_build_of, jobs_run, make_images, read_dataset, reference_pixels, snakemake, write_image

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


def test_setting_that_keeps_pixels_redoes_no_shard_but_records_the_config(built):
    images, work = built
    out, ds = rerun(work, images, workers=1, shm_budget_mb=64, start_method="spawn", reuse=False)
    assert jobs_run(out, "decode_shard") == 0 and jobs_run(out, "gather") == 1
    config = json.loads(ds["attrs"]["config"])
    assert (config["workers"], config["shm_budget_mb"], config["start_method"], config["reuse"]) == (1, 64, "spawn", False)


def test_a_new_shard_count_redoes_every_shard_of_the_new_count(built):
    images, work = built
    proc = snakemake(work, images_dir=images, shards=SHARDS + 1)
    assert jobs_run(proc.stdout, "decode_shard") == SHARDS + 1 and jobs_run(proc.stdout, "gather") == 1
    ds = read_dataset(work / "results/dataset.h5")
    assert ds["paths"] == fresh_build_of(images, SHARDS + 1)["paths"]  # the new shards, in order


def test_a_new_resize_mode_redoes_every_shard(built):
    images, work = built
    out, _ = rerun(work, images, image_size="[40,40]", resize="stretch")
    assert jobs_run(out, "decode_shard") == SHARDS and jobs_run(out, "gather") == 1
    out, ds = rerun(work, images, image_size="[40,40]", resize="letterbox")
    assert jobs_run(out, "decode_shard") == SHARDS and jobs_run(out, "gather") == 1
    assert ds["images"].shape[1:3] == (40, 40)
    out, _ = rerun(work, images, image_size="[40,40]", resize="letterbox")
    assert jobs_run(out, "decode_shard") == 0 and jobs_run(out, "gather") == 0


def test_keep_snapshots_reruns_only_the_gather(built):
    images, work = built
    out, ds = rerun(work, images, keep_snapshots=3)
    assert jobs_run(out, "decode_shard") == 0 and jobs_run(out, "gather") == 1
    assert json.loads(ds["attrs"]["config"])["keep_snapshots"] == 3


def test_rows_made_by_other_decode_code_are_never_reused(tmp_path):
    """An edit to a module that makes pixels (imgshard/pixels/) changes the fingerprint, even with the
    same version: a rerun then decodes every image, whatever its key says. An edit elsewhere does not."""
    package = tmp_path / "checkout"
    shutil.copytree(REPO / "imgshard", package / "imgshard", ignore=shutil.ignore_patterns("__pycache__"))
    rels = make_images(tmp_path / "images", 5)
    os.makedirs(tmp_path / "shards")
    code = f"""
import os, sys
sys.path.insert(0, {str(package)!r})
from imgshard.build.shard import ShardJob, build_shard
from imgshard.pixels.geometry import Geometry
sources = [os.path.join({str(tmp_path / "images")!r}, r) for r in {rels!r}]
stats = [(os.stat(s).st_size, os.stat(s).st_mtime_ns) for s in sources]
result = build_shard(ShardJob(sources, {rels!r}, {str(tmp_path / "shards/shard-000.h5")!r}, Geometry(48, 64), source_stats=stats))
print(result.decoded, result.reused)
"""

    def rerun() -> tuple[int, int]:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        return tuple(int(v) for v in proc.stdout.split())

    assert rerun() == (5, 0)
    assert rerun() == (0, 5)
    with open(package / "imgshard/tools/cli.py", "a") as f:
        f.write("\n# edited: makes no pixel\n")
    assert rerun() == (0, 5)
    with open(package / "imgshard/pixels/geometry.py", "a") as f:
        f.write("\n# edited\n")
    assert rerun() == (5, 0)
    assert rerun() == (0, 5)


# --- reuse: a rerun shard copies its unchanged rows from its previous file ---


def shard_log(work, rel: str) -> str:
    return (work / f"logs/decode_shard/dataset/{shard_of(rel, SHARDS):03d}.log").read_text()


def reused(work, rel: str) -> tuple[int, int]:
    """(images, reused) of the shard ``rel`` falls in, from its log's summary line."""
    import re

    m = re.search(r"^shard \d+: (\d+) images \((\d+) reused\)", shard_log(work, rel), flags=re.M)
    return int(m.group(1)), int(m.group(2))


def assert_same_as_fresh_build(tmp_path, images, ds, shards=SHARDS, name="fresh", **config):
    """What a fresh build of ``images`` stores: at full size, known without building it (the listing in
    shard order, each file's digest and size, its pixels as cv2 reads them); resized, built for real."""
    if not config.get("image_size"):
        want = fresh_build_of(images, shards)
    else:
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
    """24 images built in 2 shards: (images, work, shard folder, shard 0's images sorted)."""
    images = tmp_path / "images"
    rels = make_images(images, 24)
    work = tmp_path / "work"
    work.mkdir()
    snakemake(work, images_dir=images, shards=2)
    shards = work / "results/dataset.shards"
    in_shard_0 = sorted(r for r in rels if shard_of(r, 2) == 0)
    return images, work, shards, in_shard_0


def parts_of(shards, shard: int = 0) -> list[tuple[str, int]]:
    """(part file, rows) of each part the shard's index names, in its order."""
    index = read_index(str(shards / f"shard-{shard:03d}.h5"))
    return list(zip(index.parts, index.part_rows))


def part_files(shards) -> dict[str, tuple[int, int, int]]:
    """Every part file there: (inode, size, mtime_ns), to tell that none was ever written again."""
    return {p.name: (p.stat().st_ino, p.stat().st_size, p.stat().st_mtime_ns) for p in (shards / "parts").glob("*.h5")}


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
def test_few_changed_images_go_into_a_small_part_many_into_a_fresh_one(tmp_path, two_shards, changed):
    """One changed image of a shard's eight: a part of one row beside the untouched first part; five of
    eight: one fresh part with every row, the unchanged ones copied. No part file is ever written twice."""
    images, work, shards, in_shard_0 = two_shards
    (base, rows), = parts_of(shards)
    before = part_files(shards)
    for k, rel in enumerate(in_shard_0[:changed]):
        write_image(images / rel, seed=9000 + k)
    snakemake(work, images_dir=images, shards=2)
    log = (work / "logs/decode_shard/dataset/000.log").read_text()
    assert f"{len(in_shard_0)} images ({len(in_shard_0) - changed} reused)" in log
    now = parts_of(shards)
    if changed == 1:
        assert now[0] == (base, rows) and len(now) == 2 and now[1][1] == 1
    else:
        assert len(now) == 1 and now[0][0] != base and now[0][1] == len(in_shard_0)
    after = part_files(shards)
    assert all(after[name] == stat for name, stat in before.items() if name in after)
    assert os.path.samefile(shards / "shard-000.h5", shards / "previous/shard-000.h5")
    assert not list(shards.rglob("*.tmp-*"))
    assert_same_as_fresh_build(tmp_path, images, read_dataset(work / "results/dataset.h5"), shards=2)


def test_added_and_removed_images_write_only_what_is_new(tmp_path, two_shards):
    """An added image goes into a part of its own, a removed one writes no pixel at all; once
    MAX_DELTAS small parts pile up, the next one takes in their rows; the dataset always lists the
    images as a fresh build does, virtual or copied."""
    from imgshard.build.reuse import MAX_DELTAS

    images, work, shards, in_shard_0 = two_shards
    news = [f"new{k:03d}.jpg" for k in range(400) if shard_of(f"new{k:03d}.jpg", 2) == 0][: MAX_DELTAS + 1]
    (base, rows), = parts_of(shards)

    def step(gather="virtual", compare=False):
        snakemake(work, images_dir=images, shards=2, gather=gather)
        if compare:
            ds = read_dataset(work / "results/dataset.h5")
            assert_same_as_fresh_build(tmp_path, images, ds, shards=2, name=f"fresh-{gather}", gather=gather)
        return parts_of(shards)

    write_image(images / news[0], seed=501)  # added: one row of its own
    assert step() == [(base, rows), (parts_of(shards)[1][0], 1)]
    os.unlink(images / in_shard_0[3])  # removed: the index drops it, no part is written
    before = parts_of(shards)
    assert step(gather="copy", compare=True) == before
    for k, new in enumerate(news[1:MAX_DELTAS]):  # more small parts, up to MAX_DELTAS of them
        write_image(images / new, seed=510 + k)
        now = step()
    assert len(now) == 1 + MAX_DELTAS and now[0] == (base, rows)
    write_image(images / news[MAX_DELTAS], seed=520)  # one more: the small parts' rows merge into the new one
    now = step(compare=True)
    assert now[0] == (base, rows) and len(now) == 2 and now[1][1] == MAX_DELTAS + 1


def test_many_removed_images_make_a_fresh_part_without_dead_rows(two_shards):
    """More than a quarter of a shard's rows no longer used: a fresh part in list order instead."""
    images, work, shards, in_shard_0 = two_shards
    (base, _), = parts_of(shards)
    for rel in in_shard_0[: len(in_shard_0) // 2]:
        os.unlink(images / rel)
    snakemake(work, images_dir=images, shards=2)
    left = len(in_shard_0) - len(in_shard_0) // 2
    (part, rows), = parts_of(shards)
    assert part != base and rows == left
    assert read_index(str(shards / "shard-000.h5")).row.tolist() == list(range(left))
