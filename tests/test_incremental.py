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
    out, _ = rerun(work, images, workers=1, shm_budget_mb=64)
    assert jobs_run(out, "decode_shard") == 0
