"""The package's steps called directly, without Snakemake."""

from __future__ import annotations

import subprocess
import sys

import pytest

from imgshard.build.workers import MB, plan_buffers
from imgshard.plan.discover import find_images
from imgshard.errors import ImgshardError
from imgshard.plan.shard import assign, shard_name, shard_of
from tests.conftest import REPO


def test_discovery_finds_image_extensions_in_any_case_and_skips_hidden(tmp_path):
    for name in ["a.JPG", "b.jpeg", "c.Png", "d.tif", "e.TIFF", "f.bmp", "g.webp", "sub/deep/h.jpg"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    for name in ["notes.txt", "i.gif", ".j.jpg", ".hidden/k.jpg", "sub/.cache/l.png"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert find_images(tmp_path) == ["a.JPG", "b.jpeg", "c.Png", "d.tif", "e.TIFF", "f.bmp", "g.webp", "sub/deep/h.jpg"]


def test_image_list_replaces_scanning(tmp_path):
    for name in ["a.jpg", "b.jpg", "sub/c.jpg"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    listing = tmp_path / "list.txt"
    listing.write_text("# chosen\nsub/c.jpg\n\na.jpg\n")
    assert find_images(tmp_path, listing) == ["a.jpg", "sub/c.jpg"]


@pytest.mark.parametrize(
    "line, message",
    [
        ("missing.jpg", "line 1: '.*missing.jpg' does not exist"),
        ("../a.jpg", "line 1: '../a.jpg' must be a path relative to images_dir"),
        ("/etc/passwd", "line 1: '/etc/passwd' must be a path relative"),
        ("a.jpg\na.jpg", "line 2: 'a.jpg' is listed already on line 1"),
    ],
)
def test_image_list_errors_name_the_line(tmp_path, line, message):
    (tmp_path / "a.jpg").write_bytes(b"")
    listing = tmp_path / "list.txt"
    listing.write_text(line + "\n")
    with pytest.raises(ImgshardError, match=message):
        find_images(tmp_path, listing)


def test_shard_of_is_stable_across_processes():
    paths = [f"dir{i % 7}/img{i}.jpg" for i in range(200)]
    here = [shard_of(p, 16) for p in paths]
    code = f"from imgshard.plan.shard import shard_of; print([shard_of(p, 16) for p in {paths!r}])"
    for seed in ("0", "12345"):
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO, env={"PYTHONHASHSEED": seed}, capture_output=True, text=True, check=True
        ).stdout
        assert eval(out) == here
    assert set(here) == set(range(16))  # 200 paths reach every shard


def test_adding_or_removing_an_image_moves_no_other():
    paths = [f"img{i}.jpg" for i in range(100)]
    before = assign(paths, 8)
    after = assign(paths[:40] + paths[41:] + ["zz_new.jpg"], 8)
    changed = [i for i in range(8) if before[i] != after[i]]
    assert set(changed) <= {shard_of("img40.jpg", 8), shard_of("zz_new.jpg", 8)}


def test_shard_names_sort_in_shard_order():
    names = [shard_name(i, 1500) for i in range(1500)]
    assert names == sorted(names) and names[7] == "0007"
    assert shard_name(3, 16) == "003"


@pytest.mark.parametrize(
    "n, budget_images, free_images, expected",
    [
        (10, 100, 100, (3, 2)),  # the whole shard fits: still four batches, so writing overlaps decoding
        (100, 20, 1000, (10, 2)),  # two buffers of half the budget each
        (100, 20, 6, (3, 2)),  # /dev/shm smaller than the budget: shrink to fit
        (100, 1, 100, (1, 1)),  # room for one image only: no overlap
        (1, 10, 10, (1, 1)),
        (0, 10, 10, (0, 0)),
    ],
)
def test_plan_buffers(n, budget_images, free_images, expected):
    image = 3 * MB
    assert plan_buffers(n, image, budget_images * image, free_images * image) == expected


def test_plan_buffers_refuses_what_cannot_fit():
    with pytest.raises(ImgshardError, match="shm_budget_mb: 2 MB is less than one image"):
        plan_buffers(5, 3 * MB, 2 * MB, 100 * MB)
    with pytest.raises(ImgshardError, match=r"/dev/shm has 2 MB free but one image needs 3 MB.*--shm-size=6m\)$"):
        plan_buffers(5, 3 * MB, 100 * MB, 2 * MB)
    # two jobs at once: each its half of what is free
    assert plan_buffers(100, 3 * MB, 100 * MB, 12 * MB, jobs=2) == (1, 2)
    with pytest.raises(ImgshardError, match=r"5 MB free, 2 MB for each of the 2 shard jobs .*--shm-size=12m\), or run fewer jobs"):
        plan_buffers(5, 3 * MB, 100 * MB, 5 * MB, jobs=2)


def test_the_shm_budget_is_shared_by_the_jobs_that_run_at_once():
    from imgshard.plan.config import shard_shm_mb

    row = 9 * MB  # a 1400x2100 image
    assert shard_shm_mb(1024, 1, 2, row) == 512  # --cores 2: two one-worker jobs side by side
    assert shard_shm_mb(1024, 2, 2, row) == 1024  # one job holds every core
    assert shard_shm_mb(1024, 16, 64, row) == 256  # four jobs of sixteen workers
    assert shard_shm_mb(1024, 1, None, row) == 1024  # a cluster: a node per job
    assert shard_shm_mb(20, 1, 4, row) == 18  # never under two rows while the budget holds them
    assert shard_shm_mb(8, 1, 4, row) == 8  # not one row: the job says shm_budget_mb is too small


def test_auto_workers_share_the_cores_out_over_the_shards(monkeypatch):
    from imgshard.plan import config

    monkeypatch.setattr(config, "physical_cores", lambda: 64)
    assert config.shard_workers("auto", 8, None) == 8  # 8 jobs of 8 workers
    assert config.shard_workers("auto", 8, 2) == 1  # --cores 2: two one-worker jobs side by side
    assert config.shard_workers("auto", 8, 12) == 2  # rounded up
    assert config.shard_workers("auto", 100, None) == 1
    assert config.shard_workers(3, 8, 2) == 3  # a number is taken as it is


def test_guided_tasks_cover_every_image_once_and_shrink_to_single_images():
    from imgshard.build.workers import guided_tasks

    for n, workers in [(1, 1), (7, 1), (134, 1), (100, 4), (512, 16)]:
        tasks = guided_tasks(list(range(n)), workers)
        assert [i for task in tasks for i in task] == list(range(n))
        sizes = [len(t) for t in tasks]
        assert sizes == sorted(sizes, reverse=True) and sizes[-1] == 1
        assert sizes[0] == -(-n // (2 * workers))


def test_the_disk_estimate_counts_a_copy_twice_and_what_a_rebuild_replaces(tmp_path):
    from imgshard.plan.datasets import Dataset
    from imgshard.plan.space import needed_bytes

    def dataset(gather):
        settings = {"gather": gather, "output": str(tmp_path / "results/train.h5")}
        return Dataset("train", settings, [f"{i}.jpg" for i in range(10)], None, [], (100, 200), [])

    row = 100 * 200 * 3
    assert needed_bytes(dataset("virtual")) == 10 * row
    assert needed_bytes(dataset("copy")) == 20 * row
    parts = tmp_path / "results/train.shards/parts"
    parts.mkdir(parents=True)
    (parts / "000-a.h5").write_bytes(bytes(4 * row))  # the parts a rebuild replaces
    (tmp_path / "results/train.h5").write_bytes(bytes(6 * row))  # and the dataset (a copy)
    assert needed_bytes(dataset("copy")) == 10 * row
