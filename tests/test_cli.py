"""The package installed into a fresh virtual environment: imports from anywhere, the `imgshard` command,
and `snakemake --report` with the runtime requirements alone (no dev requirements)."""

from __future__ import annotations

import os
import subprocess
import sys

import cv2
import h5py
import numpy as np
import pytest

import imgshard
from imgshard.tools.figures import PALETTE
from imgshard.build.index import read_index
from tests.conftest import REPO, config_args, make_images
from tests.images import CLASSES, random_masks, stored_masks, write_clouds_csv


def run(cmd: list, cwd, check: bool = True) -> subprocess.CompletedProcess:
    # A clean environment: nothing of this checkout or of .venv on the path.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    """A new virtual environment with `pip install .` of this checkout, and nothing else."""
    root = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", root / "env"], cwd=root)
    run([root / "env/bin/python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check", REPO], cwd=root)
    return root / "env/bin"


@pytest.fixture(scope="module")
def built(venv, tmp_path_factory):
    """A dataset with masks and one skipped file, built with the fresh environment's snakemake."""
    root = tmp_path_factory.mktemp("project")
    rels = make_images(root / "images", 7)
    (root / "images/broken.jpg").write_bytes(b"not a jpeg")
    truth = {rel: random_masks(i) for i, rel in enumerate(rels)}
    truth["broken.jpg"] = random_masks(99)
    write_clouds_csv(root / "train.csv", truth)
    config = config_args(images_dir=root / "images", labels=root / "train.csv", shards=2, on_error="skip")
    work = root / "work"
    work.mkdir()
    snakemake = [venv / "snakemake", "-s", REPO / "Snakefile", "--directory", work, "--cores", "2"]
    run(snakemake + config, cwd=root)
    report = run(snakemake + ["report_figures", "--report", work / "report.html", "--report-after-run"] + config, cwd=root)
    return work / "results/dataset.h5", root, truth, report


def test_the_package_imports_from_anywhere(venv, tmp_path):
    proc = run([venv / "python", "-c", "import imgshard; print(imgshard.__file__, imgshard.H5ImageDataset, imgshard.batches)"], cwd=tmp_path)
    assert str(venv.parent) in proc.stdout and str(REPO) not in proc.stdout
    assert run([venv / "imgshard", "--version"], cwd=tmp_path).stdout.strip() == f"imgshard {imgshard.__version__}"


def test_report_works_with_the_runtime_requirements_alone(built, venv):
    dataset, _, _, _ = built
    html = (dataset.parent.parent / "report.html").read_text()
    assert "contact_sheet.png" in html and "throughput.png" in html
    assert "pygments" in run([venv / "python", "-m", "pip", "list"], cwd=dataset.parent).stdout.lower()
    assert "pytest" not in run([venv / "python", "-m", "pip", "list"], cwd=dataset.parent).stdout.lower()


def test_info_tells_count_shape_shards_classes_skipped_and_config(built, venv, tmp_path):
    dataset, root, truth, _ = built
    out = run([venv / "imgshard", "info", dataset], cwd=tmp_path).stdout
    assert "images: 7 of 48x64x3 uint8 (RGB)" in out
    assert "gather: virtual, over 2 part files, all readable" in out
    present = [sum(bool(truth[r][..., k].any()) for r in truth if r != "broken.jpg") for k in range(len(CLASSES))]
    assert "masks (images with each class): " + ", ".join(f"{c} {n}" for c, n in zip(CLASSES, present)) in out
    assert "skipped: 1\n  broken.jpg: not a decodable image" in out
    assert '  on_error: "skip"' in out and f'  images_dir: "{root / "images"}"' in out


@pytest.mark.parametrize("damage", ["missing", "truncated"])
def test_info_fails_when_a_part_file_is_missing_or_damaged(built, venv, tmp_path, damage):
    dataset, _, _, _ = built
    part = dataset.parent / "dataset.shards" / read_index(str(dataset.parent / "dataset.shards/shard-001.h5")).parts[0]
    data = part.read_bytes()
    part.rename(tmp_path / "away.h5")
    if damage == "truncated":  # a copy cut short
        part.write_bytes(data[: len(data) * 2 // 3])
    try:
        proc = run([venv / "imgshard", "info", dataset], cwd=tmp_path, check=False)
    finally:
        (tmp_path / "away.h5").replace(part)
    assert proc.returncode == 1
    assert "gather: virtual, over 2 part files, 1 MISSING OR DAMAGED (they would read as zeros)" in proc.stdout
    assert f"  {part}: " in proc.stdout and ("is missing" if damage == "missing" else "truncated") in proc.stdout
    assert proc.stderr.strip() == (
        f"imgshard: {dataset}: 1 part files of its virtual dataset are missing or damaged: rebuild it (snakemake --cores N)"
    )


def test_show_draws_the_chosen_images_with_masks_outlined(built, venv, tmp_path):
    dataset, _, truth, _ = built
    png = tmp_path / "three.png"
    proc = run([venv / "imgshard", "show", dataset, "0", "3", "-1", "-o", png], cwd=tmp_path)
    with h5py.File(dataset) as f:
        paths = list(f["paths"].asstr()[()])
        masks = stored_masks(f, [0, 3, 6])
    assert proc.stdout.strip() == f"imgshard: wrote {png}: {paths[0]}, {paths[3]}, {paths[6]}"
    sheet = cv2.imread(str(png), cv2.IMREAD_COLOR_RGB)
    assert sheet is not None and sheet.shape[1] > sheet.shape[0]  # three side by side
    pixels = sheet.reshape(-1, 3).astype(int)
    for k in range(len(CLASSES)):
        if masks[..., k].any():
            assert (np.abs(pixels - PALETTE[k]).sum(axis=1) < 30).sum() > 20, f"no outline of class {k}"


def test_show_refuses_an_index_out_of_range(built, venv, tmp_path):
    dataset, _, _, _ = built
    proc = run([venv / "imgshard", "show", dataset, "7", "-o", tmp_path / "x.png"], cwd=tmp_path, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"imgshard: {dataset}: index 7 is out of range (it holds 7 images, 0 to 6)"
    assert not (tmp_path / "x.png").exists()


def test_verify_passes_then_names_a_changed_file(built, venv, tmp_path):
    dataset, root, _, _ = built
    proc = run([venv / "imgshard", "verify", dataset, "--workers", "2"], cwd=tmp_path)
    assert proc.stdout.strip() == f"imgshard: verify: {dataset}: all 7 images match their sources in {root / 'images'}"
    victim = root / "images/img0002.jpg"
    original = victim.read_bytes()
    victim.write_bytes(original[:-200] + b"\xff\xd9")
    try:
        proc = run([venv / "imgshard", "verify", dataset], cwd=tmp_path, check=False)
    finally:
        victim.write_bytes(original)
    assert proc.returncode == 1
    assert "changed: img0002.jpg (sha256 differs)" in proc.stderr


@pytest.mark.parametrize(
    "args, expected",
    [
        (["info", "nowhere.h5"], "imgshard: nowhere.h5: no such file"),
        (["info", "plain.txt"], "imgshard: plain.txt: not an HDF5 file"),
    ],
)
def test_bad_input_is_one_line_and_a_non_zero_exit(venv, tmp_path, args, expected):
    (tmp_path / "plain.txt").write_text("hello")
    proc = run([venv / "imgshard", *args], cwd=tmp_path, check=False)
    assert proc.returncode == 1 and proc.stderr.strip() == expected


def test_every_command_has_help(venv, tmp_path):
    for command in ("info", "show", "verify", "export"):
        proc = run([venv / "imgshard", command, "--help"], cwd=tmp_path)
        assert proc.stdout.startswith(f"usage: imgshard {command}")


def test_an_editable_install_imports_from_the_checkout(venv, tmp_path):
    run([venv / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps", "-e", REPO], cwd=tmp_path)
    proc = run([venv / "python", "-c", "import imgshard; print(imgshard.__file__)"], cwd=tmp_path)
    assert proc.stdout.strip() == str(REPO / "imgshard/__init__.py")


# --- the command's error paths, in this process (imgshard.tools.cli.main is what the command runs) ---


@pytest.fixture
def small(tmp_path):
    from tests.conftest import build_with_package

    rels = make_images(tmp_path / "images", 4)
    return build_with_package(tmp_path, tmp_path / "images", [rels[:2], rels[2:]]), tmp_path / "images", rels


def one_line_error(capsys, argv) -> str:
    from imgshard.tools.cli import main

    assert main([str(a) for a in argv]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    return err


def test_verify_finds_sources_where_images_dir_says(small, tmp_path, capsys):
    from imgshard.tools.cli import main

    dataset, images, _ = small
    moved = tmp_path / "moved"
    images.rename(moved)
    # built without Snakemake, it records no images_dir: only --images-dir says where the sources are
    assert one_line_error(capsys, ["verify", dataset]) == f"imgshard: {dataset}: it does not record its images_dir; pass --images-dir"
    assert main(["verify", str(dataset), "--images-dir", str(moved), "--workers", "1"]) == 0
    assert capsys.readouterr().out.strip() == f"imgshard: verify: {dataset}: all 4 images match their sources in {moved}"


def test_a_file_that_is_not_an_imgshard_dataset_is_named(tmp_path, capsys):
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = np.zeros(3)
    for command in (["info"], ["verify"], ["show", "-o", tmp_path / "x.png", "0"]):
        err = one_line_error(capsys, [command[0], tmp_path / "other.h5", *command[1:]])
        assert err == f"imgshard: {tmp_path / 'other.h5'}: not an imgshard dataset (it has no 'images')"


def test_show_into_a_missing_folder_is_refused(small, tmp_path, capsys):
    dataset, _, _ = small
    err = one_line_error(capsys, ["show", dataset, "0", "-o", tmp_path / "nowhere/x.png"])
    assert err == f"imgshard: -o {tmp_path / 'nowhere/x.png'}: folder {tmp_path / 'nowhere'} does not exist"


def test_show_and_verify_refuse_a_virtual_dataset_with_a_part_missing(small, capsys):
    dataset, _, _ = small
    part = dataset.parent / "dataset.shards" / read_index(str(dataset.parent / "dataset.shards/shard-001.h5")).parts[0]
    part.unlink()
    images = dataset.parent.parent / "images"
    for argv in (["show", dataset, "0", "-o", dataset.parent / "x.png"], ["verify", dataset, "--images-dir", images, "--workers", "1"]):
        err = one_line_error(capsys, argv)
        assert err == f"imgshard: {part}: part file of the virtual dataset is missing (it would read as zeros); rebuild the dataset"
    assert not (dataset.parent / "x.png").exists()
