"""Files as people really make them: Excel's CSVs, names with a tab or a line end, dangling symbolic links,
a part file cut short. Each builds, or stops with one line naming the file, and loses nothing."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import h5py
import numpy as np
import pytest

from imgshard.build.index import read_index
from tests.conftest import REPO, jobs_run, make_images, read_dataset, reference_pixels, snakemake, write_image

ODD_NAMES = ["tab\there.jpg", "new\nline.jpg", "back\\slash.jpg", "space and, comma 'quote'.jpg", "ünïcödé.jpg"]


def test_names_with_a_tab_or_a_line_end_build_like_any_other(tmp_path, workdir):
    images = tmp_path / "images"
    rels = make_images(images, 4)
    for k, name in enumerate(ODD_NAMES):
        write_image(images / name, seed=300 + k)
    labels = {rel: ["b", "a"][i % 2] for i, rel in enumerate(rels + ODD_NAMES)}
    with open(tmp_path / "labels.csv", "w", newline="") as f:  # the csv module quotes a name with a line end
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        writer.writerows(labels.items())
    snakemake(workdir, images_dir=images, labels=tmp_path / "labels.csv", shards=2)
    ds = read_dataset(workdir / "results/dataset.h5")
    assert sorted(ds["paths"]) == sorted(labels)
    with h5py.File(workdir / "results/dataset.h5") as f:
        classes, stored = list(f["labels"].attrs["classes"]), f["labels"][()]
    for i, rel in enumerate(ds["paths"]):
        np.testing.assert_array_equal(ds["images"][i], reference_pixels(images, rel), err_msg=repr(rel))
        assert classes[stored[i]] == labels[rel]
    # and a rerun with nothing changed reads its manifests back as they were written
    assert "Nothing to be done" in snakemake(workdir, images_dir=images, labels=tmp_path / "labels.csv", shards=2).stdout


def test_a_csv_and_an_image_list_saved_by_excel_are_read(tmp_path, workdir):
    """Excel's "CSV UTF-8" starts with a byte-order mark and ends lines with CRLF; both are invisible to its user."""
    images = tmp_path / "images"
    rels = make_images(images, 4)
    listed = rels[:3]
    given = {r: "xy"[i % 2] for i, r in enumerate(listed)}
    (tmp_path / "labels.csv").write_bytes(("\ufeffpath,label\r\n" + "".join(f"{r},{c}\r\n" for r, c in given.items())).encode("utf-8"))
    (tmp_path / "list.txt").write_bytes(("\ufeff" + "\r\n".join(listed) + "\r\n").encode("utf-8"))
    # on_error: fail (the default): a header or path misread for the mark, or a label with a stray \r, fails the run.
    snakemake(workdir, images_dir=images, labels=tmp_path / "labels.csv", image_list=tmp_path / "list.txt", shards=1)
    ds = read_dataset(workdir / "results/dataset.h5")
    assert ds["paths"] == sorted(listed)
    with h5py.File(workdir / "results/dataset.h5") as f:
        classes, stored = [str(c) for c in f["labels"].attrs["classes"]], f["labels"][()]
    assert classes == ["x", "y"]
    assert {rel: classes[k] for rel, k in zip(ds["paths"], stored)} == given


@pytest.fixture
def with_dangling_link(tmp_path):
    images = tmp_path / "images"
    make_images(images, 5)
    write_image(tmp_path / "elsewhere/target.jpg", seed=9)
    os.symlink(tmp_path / "elsewhere/target.jpg", images / "linked.jpg")
    os.symlink(tmp_path / "elsewhere/gone.jpg", images / "dangling.jpg")  # its target was deleted
    return images


def test_a_dangling_link_stops_the_run_with_one_line_naming_it(with_dangling_link, workdir):
    proc = snakemake(workdir, check=False, images_dir=with_dangling_link)
    assert proc.returncode != 0
    assert f"{with_dangling_link}/dangling.jpg: dangling symbolic link (to '{with_dangling_link.parent}/elsewhere/gone.jpg'); remove it, or set on_error: skip" in proc.stdout
    assert "Traceback" not in proc.stdout and jobs_run(proc.stdout, "decode_shard") == 0


def test_with_skip_a_dangling_link_is_listed_with_its_reason(with_dangling_link, workdir):
    snakemake(workdir, images_dir=with_dangling_link, on_error="skip")
    ds = read_dataset(workdir / "results/dataset.h5")
    assert "linked.jpg" in ds["paths"] and len(ds["paths"]) == 6
    assert dict(ds["skipped"]) == {"dangling.jpg": f"dangling symbolic link (to '{with_dangling_link.parent}/elsewhere/gone.jpg')"}


def test_a_part_file_cut_short_is_named_in_one_line_and_rebuilt_by_the_next_run(tmp_path, workdir):
    images = tmp_path / "images"
    make_images(images, 8)
    snakemake(workdir, images_dir=images, shards=2)
    dataset = workdir / "results/dataset.h5"
    part = workdir / "results/dataset.shards" / read_index(str(workdir / "results/dataset.shards/shard-001.h5")).parts[0]
    part.write_bytes(part.read_bytes()[:-5000])  # a copy cut short
    imgshard = [sys.executable, "-m", "imgshard"]
    for command in ("verify", "info"):
        proc = subprocess.run([*imgshard, command, str(dataset)], capture_output=True, text=True, cwd=workdir, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert proc.returncode == 1, (command, proc.stdout, proc.stderr)
        line = proc.stderr.strip()
        assert "\n" not in line and "Traceback" not in line, line
        if command == "verify":
            assert line.startswith(f"imgshard: {part}: truncated") and "rebuild" in line, line
        else:
            assert "1 part files of its virtual dataset are missing or damaged: rebuild it" in line and f"{part}: truncated" in proc.stdout
    proc = snakemake(workdir, images_dir=images, shards=2)
    assert f"imgshard: {part}: damaged (not the size it was written with); its shard is rebuilt" in proc.stdout
    assert jobs_run(proc.stdout, "decode_shard") == 1
    assert "is gone or damaged; decoding every image" in (workdir / "logs/decode_shard/dataset/001.log").read_text()
    ds = read_dataset(dataset)
    for i, rel in enumerate(ds["paths"]):
        np.testing.assert_array_equal(ds["images"][i], reference_pixels(images, rel))


def test_a_deleted_shard_folder_is_rebuilt_and_never_read_as_zeros(tmp_path, workdir):
    """The user deletes results/dataset.shards/: the next run rebuilds every shard and publishes the
    dataset again (Snakemake alone would take the finished gather as up to date)."""
    import shutil

    images = tmp_path / "images"
    make_images(images, 6)
    snakemake(workdir, images_dir=images, shards=2)
    shutil.rmtree(workdir / "results/dataset.shards")
    proc = snakemake(workdir, images_dir=images, shards=2)
    assert "shard-000.h5: gone; the shard is rebuilt" in proc.stdout
    assert jobs_run(proc.stdout, "decode_shard") == 2 and jobs_run(proc.stdout, "gather") == 1
    ds = read_dataset(workdir / "results/dataset.h5")
    for i, rel in enumerate(ds["paths"]):
        np.testing.assert_array_equal(ds["images"][i], reference_pixels(images, rel))
