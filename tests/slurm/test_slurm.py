"""The pipeline through a real SLURM scheduler (`make test-slurm` brings up a single-node cluster first).

Not part of `make test`: these need the cluster that `make slurm-up` starts as root.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import h5py
import numpy as np
import pytest

from imgshard.plan.config import shard_workers
from tests.conftest import REPO, make_images, snakemake

pytestmark = pytest.mark.slurm

# The profile as shipped: it must work with this cluster out of the box (squeue, no account, short polling).
SLURM_FLAGS = [
    "--workflow-profile",
    str(REPO / "workflow/profiles/slurm"),
    "--slurm-keep-successful-logs",  # the plugin deletes them otherwise; the test reads them
]


@pytest.fixture(scope="module", autouse=True)
def cluster_is_up():
    if shutil.which("sinfo") is None:
        pytest.fail("no sinfo: run `make slurm-up` (or `make test-slurm`, which does)")
    state = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True).stdout
    assert re.search(r"idle|mixed|allocated", state), f"the SLURM node is not up: {state!r}"


def test_slurm_build_equals_local_build_and_its_shards_ran_as_slurm_jobs(tmp_path):
    images = tmp_path / "images"
    make_images(images, 10)
    config = {"images_dir": images, "shards": 3}
    local, cluster = tmp_path / "local", tmp_path / "cluster"
    local.mkdir()
    cluster.mkdir()
    snakemake(local, **config)
    proc = snakemake(cluster, *SLURM_FLAGS, timeout=600, **config)

    with h5py.File(local / "results/dataset.h5") as a, h5py.File(cluster / "results/dataset.h5") as b:
        for name in ("paths", "sha256"):
            assert list(a[name].asstr()[()]) == list(b[name].asstr()[()])
        np.testing.assert_array_equal(a["images"][()], b["images"][()])
        np.testing.assert_array_equal(a["original_size"][()], b["original_size"][()])

    submitted = re.findall(r"has been submitted with SLURM jobid (\d+) \(log: \S*/rule_decode_shard/", proc.stdout)
    assert len(submitted) == 3, proc.stdout[-3000:]
    for jobid in submitted:
        # MinJobAge keeps finished jobs in slurmctld's memory: scontrol still knows them.
        shown = subprocess.run(["scontrol", "show", "job", jobid], capture_output=True, text=True).stdout
        assert "JobState=COMPLETED" in shown, shown
        # what the rule asks for: cpus_per_task = workers (auto: this machine's cores over 3 shards), mem_mb = shm_budget_mb + 2048
        assert f"CPUs/Task={shard_workers('auto', 3, None)} " in shown, shown
        assert "MinMemoryNode=3G " in shown, shown
        logs = list((cluster / ".snakemake/slurm_logs/rule_decode_shard").glob(f"*/{jobid}.log"))
        assert len(logs) == 1, f"no SLURM log of job {jobid}"
