"""imgshard as a Snakemake module of the user's own workflow, as snakedeploy writes it, from a working
directory anywhere: its schema, defaults, scripts and package come from the module's own files."""

from __future__ import annotations

import json
import subprocess

from tests.conftest import REPO, SNAKEMAKE, make_images, read_dataset, snakemake


def test_the_workflow_runs_as_a_module_with_a_prefix_and_equals_a_direct_run(tmp_path):
    images = tmp_path / "images"
    make_images(images, 9)
    outer = tmp_path / "my-project"
    outer.mkdir()
    (outer / "my.yaml").write_text(f"images_dir: {images}\nshards: 2\ngather: copy\n")
    (outer / "Snakefile").write_text(
        f"""configfile: "my.yaml"


module imgshard:
    snakefile:
        "{REPO / 'Snakefile'}"
    config:
        config


use rule * from imgshard as imgshard_*
"""
    )
    proc = subprocess.run([SNAKEMAKE, "--cores", "2"], cwd=outer, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "rule imgshard_decode_shard:" in proc.stdout + proc.stderr and "rule imgshard_gather:" in proc.stdout + proc.stderr
    got = read_dataset(outer / "results/dataset.h5")
    # the user's config replaced config.yaml; what it leaves out takes the schema's default
    config = json.loads(got["attrs"]["config"])
    assert (config["shards"], config["gather"], config["image_size"], config["reuse"]) == (2, "copy", None, True)
    direct = tmp_path / "direct"
    direct.mkdir()
    snakemake(direct, images_dir=images, shards=2, gather="copy")
    want = read_dataset(direct / "results/dataset.h5")
    assert got["paths"] == want["paths"] and got["sha256"] == want["sha256"]
    assert (got["images"] == want["images"]).all()
    again = subprocess.run([SNAKEMAKE, "--cores", "2"], cwd=outer, capture_output=True, text=True)
    assert "Nothing to be done" in again.stdout + again.stderr
