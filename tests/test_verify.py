"""`snakemake verify`: every mismatch between the dataset and its sources is reported and fails the run."""

from __future__ import annotations

import h5py
import pytest

from tests.conftest import make_images, snakemake, write_image


@pytest.fixture
def built(tmp_path):
    images = tmp_path / "images"
    make_images(images, 8)
    work = tmp_path / "work"
    work.mkdir()
    config = {"images_dir": images, "shards": 2, "gather": "copy"}
    snakemake(work, **config)
    return images, work, config


def test_verify_passes_on_a_fresh_build(built):
    images, work, config = built
    proc = snakemake(work, "verify", **config)
    assert "imgshard: verify: results/dataset.h5: all 8 images match their sources" in proc.stdout


def test_verify_passes_on_a_resized_build(tmp_path, workdir):
    images = tmp_path / "images"
    make_images(images, 4, height=60, width=90)
    config = {"images_dir": images, "shards": 2, "image_size": "[20,20]", "resize": "center_crop"}
    snakemake(workdir, **config)
    assert "all 4 images match" in snakemake(workdir, "verify", **config).stdout


def test_verify_reports_changed_missing_and_extra_files(built):
    images, work, config = built
    write_image(images / "img0002.jpg", seed=4242)
    (images / "img0004.jpg").unlink()
    write_image(images / "zz_new.jpg", seed=5)
    proc = snakemake(work, "verify", check=False, **config)
    assert proc.returncode != 0
    assert "verify: results/dataset.h5 does not match" in proc.stdout and "3 problems" in proc.stdout
    assert "changed: img0002.jpg (sha256 differs)" in proc.stdout
    assert "missing: img0004.jpg" in proc.stdout
    assert "extra: zz_new.jpg" in proc.stdout


def test_verify_catches_stored_pixels_that_differ(built):
    images, work, config = built
    with h5py.File(work / "results/dataset.h5", "r+") as f:
        f["images"][3, 10, 10] = 255 - f["images"][3, 10, 10]
        tampered = f["paths"].asstr()[3]
    proc = snakemake(work, "verify", check=False, **config)
    assert proc.returncode != 0
    assert f"pixels: {tampered} (decodes to other pixels than stored)" in proc.stdout


def test_verify_without_a_dataset_says_to_build_it(tmp_path, workdir):
    make_images(tmp_path / "images", 2)
    proc = snakemake(workdir, "verify", check=False, images_dir=tmp_path / "images")
    assert proc.returncode != 0
    assert "verify: results/dataset.h5 does not exist; build it first" in proc.stdout
