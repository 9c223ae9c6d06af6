"""The whole pipeline through the real snakemake command, on generated images."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from imgshard.build.index import read_index
from imgshard.plan.shard import shard_of
from tests.conftest import REPO, config_args, jobs_run, make_images, read_dataset, reference_pixels, snakemake, write_image


@pytest.mark.parametrize("gather", ["virtual", "copy"])
def test_dataset_matches_cv2_pixel_for_pixel(images, workdir, gather):
    snakemake(workdir, images_dir=images, shards=4, gather=gather)
    ds = read_dataset(workdir / "results/dataset.h5")

    assert ds["virtual"] == (gather == "virtual")
    expected_paths = sorted(str(p.relative_to(images)).replace(os.sep, "/") for p in images.rglob("*.jpg"))
    assert sorted(ds["paths"]) == expected_paths
    # Dataset order: shard by shard, sorted paths within a shard.
    assert ds["paths"] == sorted(expected_paths, key=lambda p: (shard_of(p, 4), p))
    assert ds["images"].shape == (12, 48, 64, 3) and ds["images"].dtype == np.uint8
    for i, rel in enumerate(ds["paths"]):
        np.testing.assert_array_equal(ds["images"][i], reference_pixels(images, rel), err_msg=rel)
        assert ds["sha256"][i] == hashlib.sha256((images / rel).read_bytes()).hexdigest()
        assert tuple(ds["original_size"][i]) == (48, 64)
    config = json.loads(ds["attrs"]["config"])
    assert config["gather"] == gather and config["shards"] == 4
    assert ds["attrs"]["imgshard_version"]


def test_copy_gather_is_self_contained_and_compressed(images, workdir, tmp_path):
    snakemake(workdir, images_dir=images, shards=3, gather="copy", compression="gzip")
    moved = tmp_path / "moved.h5"
    os.rename(workdir / "results/dataset.h5", moved)
    shutil.rmtree(workdir / "results/dataset.shards")  # the indexes, parts, snapshots and previous/ links
    with h5py.File(moved) as f:
        assert f["images"].compression == "gzip" and f["images"].chunks == (1, 48, 64, 3)
        first = f["paths"].asstr()[0]
        np.testing.assert_array_equal(f["images"][0], reference_pixels(images, first))


def test_virtual_dataset_reads_from_any_working_directory(images, workdir, monkeypatch):
    snakemake(workdir, images_dir=images, shards=2)
    monkeypatch.chdir("/")
    ds = read_dataset(workdir / "results/dataset.h5")
    rel = ds["paths"][-1]
    np.testing.assert_array_equal(ds["images"][-1], reference_pixels(images, rel))


def test_results_moved_as_a_whole_still_read_every_row(images, workdir, tmp_path):
    """A virtual dataset names its parts relative to its own folder: move results/ elsewhere, read every row."""
    snakemake(workdir, images_dir=images, shards=3)
    moved = tmp_path / "elsewhere/deeper"
    moved.parent.mkdir()
    shutil.move(workdir / "results", moved)
    assert not (workdir / "results").exists()
    ds = read_dataset(moved / "dataset.h5")
    assert ds["virtual"] and len(ds["paths"]) == 12
    for i, rel in enumerate(ds["paths"]):
        np.testing.assert_array_equal(ds["images"][i], reference_pixels(images, rel))
    from imgshard import Loader

    seen = sorted(x.tobytes() for batch, _ in Loader(moved / "dataset.h5", batch_size=5) for x in batch)
    assert seen == sorted(reference_pixels(images, rel).tobytes() for rel in ds["paths"])


def test_a_run_from_another_checkout_or_environment_reruns_nothing(images, workdir, tmp_path):
    """The rules' commands name no path and no value: another clone of the project, in another folder,
    run by a Python environment at another path, takes the built dataset as up to date."""
    snakemake(workdir, images_dir=images, shards=2)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    git = lambda *args: subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.split()  # noqa: E731
    # This working tree's uncommitted edits and new files, so that the clone is this code.
    for changed in git("diff", "--name-only", "HEAD") + git("ls-files", "--others", "--exclude-standard"):
        if (REPO / changed).exists():
            (clone / changed).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / changed, clone / changed)
        elif (clone / changed).exists():
            (clone / changed).unlink()
    # Another environment: its own path (sys.executable), the same packages.
    venv = Path(sys.prefix)
    other = tmp_path / "other-env"
    (other / "bin").mkdir(parents=True)
    shutil.copy(venv / "pyvenv.cfg", other / "pyvenv.cfg")
    (other / "lib").symlink_to(venv / "lib")
    (other / "bin/python").symlink_to(os.path.realpath(sys.executable))
    cmd = [other / "bin/python", "-m", "snakemake", "-s", clone / "Snakefile", "--directory", workdir, "--cores", "2"]
    proc = subprocess.run([str(c) for c in cmd] + config_args(images_dir=images, shards=2), cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0 and "Nothing to be done" in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_same_input_gives_same_order_and_bytes(images, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for wd in (a, b):
        wd.mkdir()
        snakemake(wd, images_dir=images, shards=5, gather="copy")
    da, db = read_dataset(a / "results/dataset.h5"), read_dataset(b / "results/dataset.h5")
    assert da["paths"] == db["paths"]
    np.testing.assert_array_equal(da["images"], db["images"])


def test_runs_from_another_directory_with_relative_config_paths(tmp_path):
    """-s /repo/Snakefile --directory elsewhere: config paths resolve there, every output lands there."""
    run = tmp_path / "run1"
    make_images(run / "pics", 5)
    (run / "my.yaml").write_text("images_dir: pics\noutput: out/ds.h5\nshards: 2\n")
    snakemake(run, "--configfile", str(run / "my.yaml"))
    assert (run / "out/ds.h5").is_file()
    assert sorted(p.name for p in (run / "out/ds.shards").iterdir()) == [
        "manifest-000.tsv",
        "manifest-001.tsv",
        "parts",
        "previous",
        "shard-000.h5",
        "shard-000.json",
        "shard-001.h5",
        "shard-001.json",
        "snapshots",
    ]
    # the dataset is a second name of the one snapshot, whose rows are in the two parts
    assert len(list((run / "out/ds.shards/parts").iterdir())) == 2
    (snapshot,) = (run / "out/ds.shards/snapshots").iterdir()
    assert os.path.samefile(snapshot, run / "out/ds.h5")
    assert (run / "out/ds.stats.json").is_file()
    assert (run / "logs/gather/ds.log").is_file() and (run / ".snakemake").is_dir()
    assert not (REPO / "out").exists()
    assert len(read_dataset(run / "out/ds.h5")["paths"]) == 5


def test_every_rule_writes_its_log(images, workdir):
    snakemake(workdir, images_dir=images, shards=2)
    logs = sorted(str(p.relative_to(workdir)) for p in (workdir / "logs").rglob("*.log"))
    assert logs == [
        "logs/decode_shard/dataset/000.log",
        "logs/decode_shard/dataset/001.log",
        "logs/gather/dataset.log",
    ]
    summary = (workdir / "logs/decode_shard/dataset/000.log").read_text()
    assert "shard 0: " in summary and "images/s" in summary


def test_images_of_different_sizes_stop_the_run_before_decoding_naming_two_files(images, workdir):
    write_image(images / "zzz_big.jpg", seed=99, height=50, width=64)
    proc = snakemake(workdir, check=False, images_dir=images, shards=1)
    assert proc.returncode != 0
    assert (
        "image_size is null but images differ in size: img0001.jpg is 48x64, zzz_big.jpg is 50x64;"
        " set image_size: [height, width] to resize them"
    ) in proc.stdout
    assert jobs_run(proc.stdout, "decode_shard") == 0 and not (workdir / "logs").exists()


@pytest.mark.parametrize("start_method", ["spawn", "forkserver"])  # auto (fork) is used everywhere else
def test_shard_script_under_spawn_and_forkserver(images, workdir, start_method):
    snakemake(workdir, images_dir=images, shards=2, start_method=start_method)
    ds = read_dataset(workdir / "results/dataset.h5")
    assert len(ds["paths"]) == 12
    for i, rel in enumerate(ds["paths"]):
        np.testing.assert_array_equal(ds["images"][i], reference_pixels(images, rel))


def test_stats_sum_the_shards_stats(tmp_path, workdir):
    images = tmp_path / "images"
    make_images(images, 7)
    (images / "broken.jpg").write_bytes(b"")
    snakemake(workdir, images_dir=images, shards=3, on_error="skip")
    stats = json.loads((workdir / "results/dataset.stats.json").read_text())
    assert [s["shard"] for s in stats["shards"]] == [0, 1, 2]
    assert stats["totals"]["images"] == 7 == sum(s["images"] for s in stats["shards"])
    assert stats["totals"]["skipped_by_reason"] == {"empty file": 1}
    assert stats["totals"]["source_bytes"] == sum(p.stat().st_size for p in images.rglob("*.jpg"))
    for s in stats["shards"]:
        assert set(s["timings"]) == {"startup", "decode_wait", "write", "total"}
        parts = read_index(str(workdir / f"results/dataset.shards/shard-{s['shard']:03d}.h5")).parts
        assert s["shard_bytes"] == sum((workdir / "results/dataset.shards" / p).stat().st_size for p in parts) > 0


def test_heaviest_shards_start_first(tmp_path, workdir):
    """Shard jobs start in order of their images' bytes, largest first, so no core is left
    alone with a big shard at the end (one core here: the order is exactly the priority's)."""
    import re

    from imgshard.plan.shard import shard_of

    images = tmp_path / "images"
    for k in range(12):
        # Sizes vary a lot from shard to shard: noise costs bytes.
        write_image(images / f"img{k:03d}.jpg", seed=k, height=48 + 40 * (k % 5), width=64 + 60 * (k % 5))
    sizes = [0] * 4
    for p in images.glob("*.jpg"):
        sizes[shard_of(p.name, 4)] += p.stat().st_size
    out = snakemake(workdir, "--cores", "1", images_dir=images, shards=4, image_size="[48,64]").stdout
    started = [int(s) for s in re.findall(r"wildcards: dataset=dataset, shard=(\d+)", out)]
    assert sorted(started) == [0, 1, 2, 3] and len(set(sizes)) == 4
    assert started == sorted(started, key=lambda s: -sizes[s])


@pytest.mark.parametrize("gather", ["virtual", "copy"])
def test_the_hdf5_1_10_command_line_tools_read_the_dataset(images, workdir, gather):
    """Plain HDF5: Debian's h5dump (HDF5 1.10) reads the listing and the pixels, through the virtual
    dataset's mappings too, equal to what h5py reads."""
    if not shutil.which("h5dump"):
        pytest.skip("h5dump (Debian's hdf5-tools) is not installed; .ci/run installs it")
    version = subprocess.run(["h5dump", "--version"], capture_output=True, text=True).stdout
    if "1.10" not in version:  # what reads 1.10 reads the same on newer tools; this test is about 1.10
        pytest.skip(f"h5dump is not HDF5 1.10 here ({version.strip()}): the test is about the oldest tools imgshard supports")
    snakemake(workdir, images_dir=images, shards=2, gather=gather)
    dataset = workdir / "results/dataset.h5"
    ds = read_dataset(dataset)
    last = len(ds["paths"]) - 1
    out = subprocess.run(
        ["h5dump", "-d", "/images", "-s", f"{last},0,0,0", "-c", "1,1,4,3", "-d", "/paths", str(dataset)],
        capture_output=True, text=True, cwd="/",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    values = [int(v) for v in re.findall(r"\(\d+,0,\d,0\): (\d+), (\d+), (\d+)", out.stdout) for v in v]
    assert values == ds["images"][last, 0, :4].reshape(-1).tolist()
    assert f'"{ds["paths"][last]}"' in out.stdout
