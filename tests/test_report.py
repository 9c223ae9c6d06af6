"""`snakemake --report`: the HTML holds the contact sheet, the throughput chart and the stats table."""

from __future__ import annotations

import base64

import cv2
import numpy as np

from imgshard.tools.figures import PALETTE
from tests.conftest import jobs_run, snakemake


def test_report_contains_the_pictures(clouds, workdir):  # noqa: F811
    images, csv, truth = clouds
    config = {"images_dir": images, "labels": csv, "shards": 3}
    snakemake(workdir, **config)
    assert not (workdir / "results/dataset.report").exists()  # a build alone draws no figures
    report = workdir / "report.html"
    proc = snakemake(workdir, "report_figures", "--report", str(report), "--report-after-run", **config)
    assert jobs_run(proc.stdout, "figures") == 1 and jobs_run(proc.stdout, "decode_shard") == 0
    html = report.read_text()
    for name in ("contact_sheet.png", "throughput.png"):
        picture = base64.b64encode((workdir / "results/dataset.report" / name).read_bytes()).decode()
        assert f"filename={name};base64,{picture[:200]}" in html, f"{name} is not embedded"
        assert picture[-200:] in html
    assert '"stats.csv"' in html

    sheet = cv2.imread(str(workdir / "results/dataset.report/contact_sheet.png"), cv2.IMREAD_COLOR_RGB).reshape(-1, 3)
    shown = [cls for cls in range(4) if any(truth[rel][..., cls].any() for rel in truth)]
    for cls in shown:  # each class with a mask somewhere: its outline colour is drawn
        near = np.abs(sheet.astype(int) - PALETTE[cls]).sum(axis=1) < 30
        assert near.sum() > 50, f"no outline in the colour of class {cls}"
    table = (workdir / "results/dataset.report/stats.csv").read_text().splitlines()
    assert table[0].startswith("shard,images,skipped") and len(table) == 4
