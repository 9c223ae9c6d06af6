"""Bad configuration stops the run before any job starts, with one line naming the key and value."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.conftest import REPO, jobs_run, read_dataset, snakemake


@pytest.mark.parametrize(
    "config, expected",
    [
        ({"shards": -3}, r"config: shards = -3 is invalid: -3 is less than the minimum of 1"),
        ({"gather": "zip"}, r"config: gather = 'zip' is invalid: .*one of: virtual, copy"),
        ({"workers": 0}, r"config: workers = 0 is invalid: .*expected an integer >= 1 or 'auto'"),
        ({"compression": "brotli"}, r"config: compression = 'brotli' is invalid"),
        ({"on_error": "ignore"}, r"config: on_error = 'ignore' is invalid"),
        ({"output": "results/data.zip"}, r"config: output = 'results/data.zip' is invalid"),
        ({"shard": 4}, r"config: Additional properties are not allowed \('shard' was unexpected\): did you mean 'shards' for 'shard'\?"),
        ({"image_szie": "[8,8]"}, r"did you mean 'image_size' for 'image_szie'\?"),
        ({"nonsense_key": 1}, r"\('nonsense_key' was unexpected\) \(known keys: check_disk_space, .*workers\)"),
        ({"images_dir": "no/such/folder"}, r"images_dir: 'no/such/folder' is not a folder"),
        ({"image_size": "[0,8]"}, r"config: image_size = \[0, 8\] is invalid: .*expected null or \[height, width\] of integers 1 to 65535 \(one number: a square\)"),
        ({"image_size": "[8,8,8]"}, r"config: image_size = \[8, 8, 8\] is invalid: .*\[height, width\]"),
    ],
)
def test_bad_value_stops_before_any_job(images, workdir, config, expected):
    config = {"images_dir": images, **config}
    proc = snakemake(workdir, check=False, **config)
    assert proc.returncode != 0
    assert re.search(expected, proc.stdout), proc.stdout[-3000:]
    assert jobs_run(proc.stdout, "decode_shard") == 0
    assert not (workdir / "results").exists()


def test_empty_folder_is_an_error(tmp_path, workdir):
    empty = tmp_path / "empty"
    (empty / ".hidden").mkdir(parents=True)
    (empty / ".hidden/a.jpg").write_bytes(b"x")
    (empty / "notes.txt").write_text("not an image")
    proc = snakemake(workdir, check=False, images_dir=empty)
    assert proc.returncode != 0
    assert f"images_dir '{empty}': no images found" in proc.stdout


def test_default_images_dir_missing_points_at_make_demo(workdir):
    proc = snakemake(workdir, check=False)
    assert f"images_dir: 'demo/train_images' is not a folder: '{workdir}/demo/train_images' does not exist" in proc.stdout
    assert f"(relative paths resolve against snakemake's working directory, {workdir}) (`make demo` writes the demo images" in proc.stdout


def test_every_schema_key_has_a_default_in_config_yaml():
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    assert set(config) == set(schema["properties"])
    for key, spec in schema["properties"].items():
        assert config[key] == spec["default"], key


@pytest.mark.parametrize("size", ["24", "[24]", "[24,24]"])
def test_one_number_for_image_size_is_a_square(images, workdir, size):
    snakemake(workdir, images_dir=images, image_size=size, shards=1)
    ds = read_dataset(workdir / "results/dataset.h5")
    assert ds["images"].shape[1:] == (24, 24, 3)
    assert json.loads(ds["attrs"]["config"])["image_size"] == [24, 24]
