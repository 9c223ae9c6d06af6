"""Several datasets in one run (train and test): each its own outputs, shared pixel settings, incremental apart."""

from __future__ import annotations

import json
import re

import h5py
import pytest
import yaml

from tests.conftest import jobs_run, make_images, read_dataset, reference_pixels, snakemake, write_image
from tests.images import stored_masks


def write_config(path, **config):
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def project(clouds, tmp_path, workdir):  # noqa: F811
    """A train set with Clouds masks and a test set without labels, built in one run."""
    train, csv, _ = clouds
    test = tmp_path / "test_images"
    make_images(test, 5, seed=9)
    config = write_config(
        tmp_path / "project.yaml",
        datasets={
            "train": {"images_dir": str(train), "labels": str(csv)},
            "test": {"images_dir": str(test), "shards": 2},
        },
        shards=3,
        image_size=[24, 32],
    )
    proc = snakemake(workdir, "--configfile", str(config))
    return train, test, config, proc


def test_train_and_test_are_built_side_by_side_with_their_own_files(project, workdir):
    train, test, _, proc = project
    results = workdir / "results"
    for name, shards in (("train", 3), ("test", 2)):
        assert (results / f"{name}.h5").is_file()
        assert sorted(p.name for p in (results / f"{name}.shards").glob("*.h5")) == [f"shard-{i:03d}.h5" for i in range(shards)]
        assert (results / f"{name}.stats.json").is_file()
        assert (workdir / f"logs/gather/{name}.log").is_file()
    assert not (results / "stats.json").exists() and not (results / "report").exists()

    tr, te = read_dataset(results / "train.h5"), read_dataset(results / "test.h5")
    assert len(tr["paths"]) == 9 and len(te["paths"]) == 5
    # The shared pixel settings apply to both; each keeps its own images_dir.
    assert tr["images"].shape[1:] == te["images"].shape[1:] == (24, 32, 3)
    with h5py.File(results / "train.h5") as f, h5py.File(results / "test.h5") as g:
        assert stored_masks(f).shape == (9, 24, 32, 4) and "mask_bits" not in g and "labels" not in g
        assert json.loads(g.attrs["config"])["images_dir"] == str(test)
    assert "imgshard: results/train.h5: 9 images from 3 shards" in proc.stdout
    assert "imgshard: results/test.h5: 5 images from 2 shards" in proc.stdout


def test_changing_a_test_image_redoes_nothing_of_the_train_set(project, workdir):
    train, test, config, _ = project
    write_image(test / "img0001.jpg", seed=4321)
    proc = snakemake(workdir, "--configfile", str(config))
    assert jobs_run(proc.stdout, "decode_shard") == 1 and jobs_run(proc.stdout, "gather") == 1
    assert re.findall(r"wildcards: dataset=(\w+)", proc.stdout) and set(re.findall(r"wildcards: dataset=(\w+)", proc.stdout)) == {"test"}
    assert "Nothing to be done" in snakemake(workdir, "--configfile", str(config)).stdout


def test_a_dataset_overrides_a_pixel_setting_for_itself_only(project, workdir, tmp_path):
    train, test, config, _ = project
    settings = yaml.safe_load(config.read_text())
    settings["datasets"]["test"]["image_size"] = [16, 16]
    write_config(config, **settings)
    proc = snakemake(workdir, "--configfile", str(config))
    assert set(re.findall(r"wildcards: dataset=(\w+), shard", proc.stdout)) == {"test"}
    te = read_dataset(workdir / "results/test.h5")
    assert te["images"].shape == (5, 16, 16, 3)
    assert read_dataset(workdir / "results/train.h5")["images"].shape == (9, 24, 32, 3)


def test_verify_checks_every_dataset_or_one_by_name(project, workdir):
    train, test, config, _ = project
    proc = snakemake(workdir, "verify", "--configfile", str(config))
    assert "verify: results/train.h5: all 9 images match" in proc.stdout
    assert "verify: results/test.h5: all 5 images match" in proc.stdout
    write_image(test / "img0002.jpg", seed=99)
    proc = snakemake(workdir, "verify", "--configfile", str(config), check=False)
    assert proc.returncode != 0
    assert "verify: results/train.h5: all 9 images match" in proc.stdout
    assert "verify: results/test.h5 does not match" in proc.stdout and "changed: img0002.jpg" in proc.stdout
    proc = snakemake(workdir, "verify_train", "--configfile", str(config))
    assert "results/train.h5: all 9 images match" in proc.stdout and "test.h5" not in proc.stdout


def test_the_report_has_a_section_per_dataset(project, workdir):
    _, _, config, _ = project
    report = workdir / "report.html"
    snakemake(workdir, "report_figures", "--report", str(report), "--report-after-run", "--configfile", str(config))
    html = report.read_text()
    assert '"train"' in html and '"test"' in html
    for name in ("train", "test"):
        assert sorted(p.name for p in (workdir / f"results/{name}.report").iterdir()) == ["contact_sheet.png", "stats.csv", "throughput.png"]


def test_the_single_folder_form_still_builds_one_dataset(images, workdir):
    snakemake(workdir, images_dir=images, shards=2)
    assert len(read_dataset(workdir / "results/dataset.h5")["paths"]) == 12
    assert (workdir / "results/dataset.stats.json").is_file()
    ds = read_dataset(workdir / "results/dataset.h5")
    assert (ds["images"][0] == reference_pixels(images, ds["paths"][0])).all()


@pytest.mark.parametrize(
    "extra, expected",
    [
        ({"images_dir": "elsewhere"}, r"config: images_dir = 'elsewhere' is set along with datasets; give each dataset its own images_dir"),
        ({"labels": "all.csv"}, r"config: labels = 'all.csv' is set along with datasets; give each dataset its own labels"),
        ({"image_list": "all.txt"}, r"config: image_list = 'all.txt' is set along with datasets; give each dataset its own image_list"),
        ({"output": "results/x.h5"}, r"config: output = 'results/x.h5' is set along with datasets; give each dataset its own output"),
        ({"datasets": {"train": {"images_dir": "x", "shard": 2}}}, r"config: Additional properties are not allowed \('shard' was unexpected\) in datasets.train: did you mean 'shards' for 'shard'\?"),
        ({"datasets": {"train": {"labels": "x.csv"}}}, r"config: datasets.train: 'images_dir' is a required property"),
        ({"datasets": {"train": {"images_dir": "x", "image_size": [0, 5]}}}, r"config: datasets.train.image_size = \[0, 5\] is invalid"),
        ({"datasets": {"a/b": {"images_dir": "x"}}}, r"config: .*'a/b' does not match"),
        ({"datasets": {"train": {"images_dir": "no/such"}}}, r"datasets.train: images_dir: 'no/such' is not a folder"),
    ],
)
def test_bad_datasets_config_is_one_line_naming_the_key(tmp_path, workdir, extra, expected):
    config = write_config(tmp_path / "bad.yaml", **{"datasets": {"train": {"images_dir": str(tmp_path)}}, **extra})
    proc = snakemake(workdir, "--configfile", str(config), check=False)
    assert proc.returncode != 0
    assert re.search(expected, proc.stdout), proc.stdout[-2000:]
    assert not (workdir / "results").exists()
