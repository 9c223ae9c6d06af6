"""How a rule hands its job to its script: a shell command with the job as JSON (imgshard/steps/args.py)."""

from __future__ import annotations

import os
import subprocess
import time

from imgshard.steps.args import INLINE_MAX, SPILL_MAX_AGE_DAYS, job_argument, job_from_argv, prune_spilled
from tests.conftest import jobs_run, make_images, read_dataset, snakemake, write_image

SETTINGS = {"shard": 3, "pixels": {"shape": [48, 64], "resize": None}, "labels": None}


def test_a_job_comes_back_as_one_object(tmp_path):
    arg = job_argument(SETTINGS, spill_dir=str(tmp_path))
    assert not arg.startswith("@") and not os.listdir(tmp_path)
    job = job_from_argv([arg, "log=logs/x.log", "out=results/a b.h5", "threads=3", "shm_mb=512", "start_method=spawn", "reuse=False"])
    assert job.params.shard == 3 and job.params.pixels == {"shape": [48, 64], "resize": None} and job.params.labels is None
    assert (job.log, job.out, job.threads, job.shm_mb, job.start_method) == ("logs/x.log", "results/a b.h5", 3, 512, "spawn")
    assert job.reuse is False


def test_a_job_too_long_for_one_argument_goes_through_a_file_named_by_its_content(tmp_path):
    long = {**SETTINGS, "left_out": [[f"img{i:06d}.jpg", "no row in labels"] for i in range(INLINE_MAX // 20)]}
    arg = job_argument(long, spill_dir=str(tmp_path))
    assert arg.startswith("@") and len(arg) < 200
    assert job_argument(long, spill_dir=str(tmp_path)) == arg  # same job, same file: its params do not change
    assert len(os.listdir(tmp_path)) == 1
    assert job_from_argv([arg, "log=x.log"]).params.left_out == long["left_out"]


def _age(path, days):
    then = time.time() - days * 86400
    os.utime(path, (then, then))


def test_job_files_unused_for_a_week_are_pruned_and_those_in_use_are_refreshed(tmp_path):
    long = {**SETTINGS, "left_out": [[f"img{i:06d}.jpg", "no row in labels"] for i in range(INLINE_MAX // 20)]}
    in_use = job_argument(long, spill_dir=str(tmp_path))[1:]
    orphan = job_argument({**long, "shard": 4}, spill_dir=str(tmp_path))[1:]
    (tmp_path / "x.json.tmp-123").write_text("{")  # a writer killed midway
    for path in (in_use, orphan, tmp_path / "x.json.tmp-123"):
        _age(path, SPILL_MAX_AGE_DAYS + 1)
    assert job_argument(long, spill_dir=str(tmp_path)) == "@" + in_use  # a run refers to it again
    assert prune_spilled(str(tmp_path)) == 2
    assert os.listdir(tmp_path) == [os.path.basename(in_use)]
    assert prune_spilled(str(tmp_path / "never made")) == 0


def test_gather_with_more_left_out_images_than_a_command_line_holds(tmp_path, workdir):
    # 1200 images with no row in the labels: their (path, reason) list is more
    # than Linux takes in one argument (128 KiB), and it is gather's job.
    images = tmp_path / "images"
    labelled = make_images(images, 3)
    make_images(images / "no_labels_for_any_image_in_this_folder", 1200, height=8, width=8, seed=5)
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\n" + "".join(f"{rel},{i}\n" for i, rel in enumerate(labelled)))
    # Left by settings of an earlier run, a week old: the run prunes it, not a newer one.
    spill = workdir / ".snakemake/imgshard-jobs"
    spill.mkdir(parents=True)
    (spill / "old.json").write_text("{}")
    _age(spill / "old.json", SPILL_MAX_AGE_DAYS + 1)
    (spill / "recent.json").write_text("{}")
    snakemake(workdir, images_dir=images, labels=csv, on_error="skip", shards=2)
    ds = read_dataset(workdir / "results/dataset.h5")
    assert sorted(ds["paths"]) == sorted(labelled) and len(ds["skipped"]) == 1200
    (job_file,) = set(os.listdir(spill)) - {"recent.json"}
    assert "old.json" not in os.listdir(spill)
    # A week later the gather's own file is as old, but the next run refers to it: kept.
    _age(spill / job_file, SPILL_MAX_AGE_DAYS + 1)
    write_image(images / labelled[0], 99, 48, 64)
    proc = snakemake(workdir, images_dir=images, labels=csv, on_error="skip", shards=2)
    assert jobs_run(proc.stdout, "gather") == 1
    assert sorted(os.listdir(spill)) == sorted([job_file, "recent.json"])


def test_a_shard_job_does_not_import_snakemake(images, workdir):
    # What the change from `script:` to a shell command saves: Snakemake's own
    # imports in every job. The job is run as Snakemake would run it.
    proc = snakemake(workdir, "--dry-run", "--printshellcmds", images_dir=images, shards=2)
    command = next(line for line in proc.stdout.splitlines() if "scripts/decode_shard.py" in line)
    command = command.removeprefix("Shell command:").strip()
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    job = subprocess.run(command, shell=True, cwd=workdir, env=env, capture_output=True, text=True, timeout=120)
    assert job.returncode == 0, job.stderr[-3000:]
    log = next((workdir / "logs/decode_shard/dataset").iterdir()).read_text()
    imported = [line.rsplit("|", 1)[1].strip() for line in (job.stderr + log).splitlines() if line.startswith("import time:")]
    assert "imgshard.build.shard" in imported and "h5py" in imported  # the import log is complete
    assert not [m for m in imported if m == "snakemake" or m.startswith("snakemake.")]
    assert next((workdir / "results/dataset.shards").glob("shard-*.h5")).stat().st_size > 0
