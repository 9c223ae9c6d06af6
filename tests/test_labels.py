"""Labels and masks: written by the test in the Clouds and classification formats, aligned with the images."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import cv2
import h5py
import numpy as np
import pytest

from imgshard import H5ImageDataset
from imgshard.build.index import read_index
from imgshard.pixels.rle import rle_decode, rle_encode
from imgshard.plan.shard import shard_of
from tests.conftest import REPO, jobs_run, make_images, read_dataset, reference_pixels, snakemake, write_image
from tests.images import CLASSES, encode, random_masks, stored_masks, write_clouds_csv

def test_rle_round_trip_matches_the_tests_own_encoder():
    for seed in range(20):
        mask = random_masks(seed)[..., seed % 4]
        assert rle_encode(mask) == encode(mask)
        np.testing.assert_array_equal(rle_decode(encode(mask), 48, 64), mask)


@pytest.mark.parametrize("gather", ["virtual", "copy"])
def test_clouds_masks_are_stored_aligned_with_images(clouds, workdir, gather):
    images, csv, truth = clouds
    snakemake(workdir, images_dir=images, labels=csv, shards=3, gather=gather)
    with h5py.File(workdir / "results/dataset.h5") as f:
        assert "masks" not in f and f["mask_bits"].dtype == np.uint8
        assert list(f["mask_bits"].attrs["classes"]) == CLASSES
        masks = stored_masks(f)
        assert masks.shape == (9, 48, 64, 4)
        for i, rel in enumerate(f["paths"].asstr()[()]):
            np.testing.assert_array_equal(masks[i], truth[rel], err_msg=rel)


def test_masks_are_resized_with_the_image_geometry(clouds, workdir):
    images, csv, truth = clouds
    snakemake(workdir, images_dir=images, labels=csv, shards=2, image_size="[24,24]", resize="letterbox", pad_value=9)
    with h5py.File(workdir / "results/dataset.h5") as f:
        masks = stored_masks(f)
        for i, rel in enumerate(f["paths"].asstr()[()]):
            # 48x64 in 24x24: an 18x24 box from row 3, padded with 0 (not pad_value) above and below
            expected = np.zeros((24, 24, 4), np.uint8)
            expected[3:21] = cv2.resize(truth[rel], (24, 18), interpolation=cv2.INTER_NEAREST)
            np.testing.assert_array_equal(masks[i], expected, err_msg=rel)
            assert (f["images"][i][:3] == 9).all()


def test_classification_labels_and_the_reader(tmp_path, workdir):
    images = tmp_path / "images"
    rels = make_images(images, 6)
    names = {rel: ["cat", "dog", "ant"][i % 3] for i, rel in enumerate(rels)}
    (tmp_path / "labels.csv").write_text("path,label\n" + "".join(f"{r},{n}\n" for r, n in names.items()))
    snakemake(workdir, images_dir=images, labels=tmp_path / "labels.csv", shards=2)
    ds = H5ImageDataset(workdir / "results/dataset.h5")
    assert ds.target == "labels" and ds.classes == ["ant", "cat", "dog"]
    for i in range(len(ds)):
        image, label = ds[i]
        assert ds.classes[label] == names[ds.path_of(i)]
        assert image.shape == (48, 64, 3)


def test_reader_returns_image_and_mask_in_a_dataloader(clouds, workdir):
    import torch

    images, csv, truth = clouds
    snakemake(workdir, images_dir=images, labels=csv, shards=2)
    ds = H5ImageDataset(workdir / "results/dataset.h5")
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2)
    got = [(x.numpy(), m.numpy()) for x, m in loader]
    masks = np.concatenate([m for _, m in got])
    assert masks.shape == (9, 48, 64, 4)
    for i in range(9):
        np.testing.assert_array_equal(masks[i], truth[ds.path_of(i)])


def test_image_without_a_row_or_row_without_an_image_fails_clearly(clouds, workdir):
    images, csv, truth = clouds
    make_images(images / "extra", 1, seed=7)  # extra/sub/img0000.jpg has no row
    csv.write_text(csv.read_text() + "gone.jpg_Fish,1 5\n")
    proc = snakemake(workdir, check=False, images_dir=images, labels=csv)
    assert proc.returncode != 0
    assert f"labels '{csv}': 1 image has no row (first: extra/sub/img0000.jpg);" in proc.stdout
    assert "1 row names an image not in images_dir (first: gone.jpg); fix the CSV or set on_error: skip" in proc.stdout
    assert jobs_run(proc.stdout, "decode_shard") == 0


def test_with_skip_an_unlabelled_image_is_left_out_and_recorded(clouds, workdir):
    images, csv, truth = clouds
    make_images(images / "extra", 1, seed=7)
    csv.write_text(csv.read_text() + "gone.jpg_Fish,1 5\n")
    proc = snakemake(workdir, images_dir=images, labels=csv, on_error="skip", shards=2)
    assert "warning: labels" in proc.stdout and "(first: gone.jpg)" in proc.stdout
    ds = read_dataset(workdir / "results/dataset.h5")
    assert sorted(ds["paths"]) == sorted(truth)
    skipped = dict(read_dataset(workdir / "results/dataset.h5")["skipped"])
    assert skipped == {"extra/sub/img0000.jpg": f"no row in labels {csv}"}


def test_changing_one_images_labels_redoes_only_its_shard(clouds, workdir):
    images, csv, truth = clouds
    snakemake(workdir, images_dir=images, labels=csv, shards=3)
    rel = sorted(truth)[4]
    truth[rel] = random_masks(99)
    write_clouds_csv(csv, truth)
    proc = snakemake(workdir, images_dir=images, labels=csv, shards=3)
    assert jobs_run(proc.stdout, "decode_shard") == 1
    assert f"wildcards: dataset=dataset, shard={shard_of(rel, 3):03d}" in proc.stdout
    with h5py.File(workdir / "results/dataset.h5") as f:
        i = list(f["paths"].asstr()[()]).index(rel)
        np.testing.assert_array_equal(stored_masks(f, [i])[0], truth[rel])


def run_example(dataset, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(REPO / "examples/train_clouds.py"), str(dataset), "--downsample", "2", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip


def steps_of(out: str) -> dict[int, str]:
    """Each step the example printed: its batch's digest."""
    return {int(m[1]): m[2] for m in re.finditer(r"^step (\d+): loss [\d.]+, \d+ images/s \(batch \S+ \S+ (\w+),", out, flags=re.M)}


def test_training_example_runs_two_steps(clouds, workdir):
    images, csv, _ = clouds
    snakemake(workdir, images_dir=images, labels=csv, shards=2)
    out, err = run_example(workdir / "results/dataset.h5", "--steps", "2").communicate(timeout=120)
    lines = out.splitlines()
    assert [ln.split(":")[0] for ln in lines] == ["step 1", "step 2"], err
    assert "classes Fish, Flower, Gravel, Sugar" in lines[0] and "nan" not in out and " images/s " in lines[1]


def test_training_example_killed_or_preempted_resumes_where_it_saved(clouds, workdir, tmp_path):
    """The example saves every 3 steps and on SIGTERM: killed hard, it loses only the steps since its last
    save; preempted, none; each resume goes on with the step count and the very batches the whole run takes."""
    import torch

    images, csv, _ = clouds
    snakemake(workdir, images_dir=images, labels=csv, shards=2)
    dataset = workdir / "results/dataset.h5"
    whole, _ = run_example(dataset, "--steps", "14", "--checkpoint", str(tmp_path / "whole.pt"), "--save-every", "3").communicate(timeout=180)
    want = steps_of(whole)
    assert sorted(want) == list(range(1, 15))  # 9 images, batch 4: epochs of 3 batches, so resumes cross epochs

    ckpt = str(tmp_path / "ckpt.pt")
    seen: dict[int, str] = {}
    saved = 0
    for sig in (signal.SIGKILL, signal.SIGTERM):
        proc = run_example(dataset, "--steps", "14", "--checkpoint", ckpt, "--save-every", "3")
        out = ""
        while True:  # until it has trained past a save, then stop it as a person or a scheduler would
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            out += line
            done = steps_of(out)
            if done and max(done) >= saved + 4:
                break
        proc.send_signal(sig)
        rest, _ = proc.communicate(timeout=120)
        out += rest
        done = steps_of(out)
        assert min(done) == saved + 1  # it went on after the last save: the step count continues
        saved = torch.load(ckpt)["step"]
        if sig == signal.SIGKILL:  # killed hard: what it did since its last save (every 3 steps) is lost, no more
            assert saved % 3 == 0 and max(done) - 3 < saved <= max(done)
        else:  # preempted: it finished the step, saved, and said so
            assert saved == max(done) and f"stopped by SIGTERM after step {saved}; checkpoint saved" in out
            assert "resumed from" in out
        seen.update(done)
    final, _ = run_example(dataset, "--steps", "14", "--checkpoint", ckpt, "--save-every", "3").communicate(timeout=180)
    last = steps_of(final)
    assert min(last) == saved + 1 and max(last) == 14
    seen.update(last)
    assert seen == want  # every step's batch is the one the whole run took


@pytest.mark.parametrize("relabelled", [1, 4])
def test_a_relabelled_image_gets_new_masks_and_the_others_keep_theirs(clouds, workdir, relabelled):
    """A mask's run-length strings are part of its row's key: a rerun redoes exactly the relabelled
    rows, written over the previous file (one of nine) or into a new one (four of nine)."""
    images, csv, truth = clouds
    snakemake(workdir, images_dir=images, labels=csv, shards=1)
    for k, rel in enumerate(sorted(truth)[:relabelled]):
        truth[rel] = random_masks(100 + k)
    write_clouds_csv(csv, truth)
    out = snakemake(workdir, images_dir=images, labels=csv, shards=1).stdout
    assert jobs_run(out, "decode_shard") == 1
    log = (workdir / "logs/decode_shard/dataset/000.log").read_text()
    assert f"9 images ({9 - relabelled} reused)" in log
    with h5py.File(workdir / "results/dataset.h5", "r") as f:
        paths = list(f["paths"].asstr()[()])
        for i, rel in enumerate(paths):
            assert (stored_masks(f, [i])[0] == truth[rel]).all(), rel
        counts = f["mask_bits"].attrs["class_counts"]
    assert list(counts) == [sum(bool(m[..., k].any()) for m in truth.values()) for k in range(len(CLASSES))]


def test_masks_follow_their_images_into_a_new_part(clouds, workdir):
    """An image removed and another added: the new image's masks go into a part of their own with its
    pixels, and every image still reads back with its own masks and class counts."""
    images, csv, truth = clouds
    snakemake(workdir, images_dir=images, labels=csv, shards=1)
    gone = sorted(truth)[2]
    os.unlink(images / gone)
    del truth[gone]
    write_clouds_csv(csv, truth)
    snakemake(workdir, images_dir=images, labels=csv, shards=1)
    write_image(images / "zz_new.jpg", seed=4321)
    truth["zz_new.jpg"] = random_masks(77)
    write_clouds_csv(csv, truth)
    snakemake(workdir, images_dir=images, labels=csv, shards=1)
    log = (workdir / "logs/decode_shard/dataset/000.log").read_text()
    assert "9 images (8 reused)" in log and "a part of 1 rows" in log
    index = read_index(str(workdir / "results/dataset.shards/shard-000.h5"))
    new = index.paths.index("zz_new.jpg")
    assert len(index.parts) == 2 and (index.part[new], index.row[new]) == (1, 0)
    with h5py.File(workdir / "results/dataset.h5", "r") as f:
        paths = list(f["paths"].asstr()[()])
        assert paths == sorted(truth)
        for i, rel in enumerate(paths):
            assert (stored_masks(f, [i])[0] == truth[rel]).all(), rel
            assert (f["images"][i] == reference_pixels(images, rel)).all(), rel
        counts = f["mask_bits"].attrs["class_counts"]
    assert list(counts) == [sum(bool(m[..., k].any()) for m in truth.values()) for k in range(len(CLASSES))]


@pytest.mark.parametrize("gather", ["virtual", "copy"])
def test_masks_and_labels_stay_aligned_row_by_row_around_a_skipped_broken_image(tmp_path, gather):
    """A broken image that has rows in the CSV is skipped: every other row keeps its own masks or label.
    Class names seen first in an order that is not alphabetical: masks keep that order, labels sort."""
    images = tmp_path / "images"
    rels = make_images(images, 9)
    (images / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg at all")
    names = ["Sugar", "Fish", "Gravel"]  # first seen in this order
    rng = np.random.default_rng(3)
    truth = {rel: (rng.random((48, 64, 3)) < 0.2).astype(np.uint8) for rel in ["broken.jpg", *rels]}
    lines = ["Image_Label,EncodedPixels"] + [f"{rel}_{c},{encode(m[..., k])}" for rel, m in truth.items() for k, c in enumerate(names)]
    (tmp_path / "masks.csv").write_text("\n".join(lines) + "\n")
    kinds = {rel: ["zebra", "ant", "moose"][i % 3] for i, rel in enumerate(["broken.jpg", *rels])}  # sorted: ant, moose, zebra
    (tmp_path / "labels.csv").write_text("path,label\n" + "".join(f"{r},{k}\n" for r, k in kinds.items()))
    for csv, kind in ((tmp_path / "masks.csv", "masks"), (tmp_path / "labels.csv", "labels")):
        work = tmp_path / kind
        work.mkdir()
        snakemake(work, images_dir=images, labels=csv, shards=3, gather=gather, on_error="skip")
        ds = read_dataset(work / "results/dataset.h5")
        assert sorted(ds["paths"]) == sorted(rels) and [p for p, _ in ds["skipped"]] == ["broken.jpg"]
        with h5py.File(work / "results/dataset.h5") as f:
            target = f["mask_bits" if kind == "masks" else kind]
            classes = list(target.attrs["classes"])
            masks = stored_masks(f) if kind == "masks" else None
            for i, rel in enumerate(ds["paths"]):
                np.testing.assert_array_equal(ds["images"][i], reference_pixels(images, rel), err_msg=rel)
                if kind == "masks":
                    np.testing.assert_array_equal(masks[i], truth[rel], err_msg=rel)
                else:
                    assert classes[target[i]] == kinds[rel], rel
        assert classes == (names if kind == "masks" else ["ant", "moose", "zebra"])


def test_labels_from_class_folders_equal_imagefolders(tmp_path, workdir):
    """labels: folders: each image's class is its top-level folder, classes sorted as torchvision's
    ImageFolder sorts them: the same classes and class indices as ImageFolder on the same folder."""
    from torchvision.datasets import ImageFolder

    images = tmp_path / "train"
    for k, cls in enumerate(["n02", "B_upper", "a_lower", "n01"]):  # not in sorted order on disk
        make_images(images / cls, 3, seed=10 + k)  # (one of each three in a subfolder of the class folder)
    snakemake(workdir, images_dir=images, labels="folders", shards=2)
    reference = ImageFolder(str(images))
    with h5py.File(workdir / "results/dataset.h5") as f:
        classes = list(f["labels"].attrs["classes"])
        stored = dict(zip(f["paths"].asstr()[()], f["labels"][()].tolist()))
    assert {c: i for i, c in enumerate(classes)} == reference.class_to_idx
    expected = {os.path.relpath(path, images): target for path, target in reference.samples}
    assert stored == expected

    # an image directly in images_dir belongs to no class: one line naming it, or skipped
    make_images(images, 1, seed=99)  # sub/img0000.jpg: a folder "sub", a class of its own
    write_image(images / "loose.jpg", seed=98)
    proc = snakemake(workdir, check=False, images_dir=images, labels="folders", shards=2)
    assert proc.returncode != 0
    assert f"labels: folders: 1 image is directly in {images}, in no class folder (first: loose.jpg); move them into one, or set on_error: skip" in proc.stdout
    snakemake(workdir, images_dir=images, labels="folders", shards=2, on_error="skip")
    ds = read_dataset(workdir / "results/dataset.h5")
    assert dict(ds["skipped"]) == {"loose.jpg": "in no class folder (labels: folders)"}
    assert len(ds["paths"]) == 13

    # one more image of a class: only its shard is redone
    write_image(images / "n01/extra.jpg", seed=97)
    proc = snakemake(workdir, images_dir=images, labels="folders", shards=2, on_error="skip")
    assert jobs_run(proc.stdout, "decode_shard") == 1
