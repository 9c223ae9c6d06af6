"""Rules verify and verify_<name>: every dataset checked against its sources (tools/verify.py)."""

from __future__ import annotations

import os
import sys

from ..errors import ImgshardError
from ..plan.manifest import read as read_manifest
from ..tools.verify import verify


def verify_job(job) -> None:
    failed = []
    for dataset, images_dir, manifests in job.params.datasets:
        if not os.path.isfile(dataset):
            raise ImgshardError(f"verify: {dataset} does not exist; build it first (snakemake --cores N)")
        # The scan of this very run wrote the manifests: they list the images there now.
        images = [e.path for m in manifests for e in read_manifest(m)]
        report = verify(dataset, images_dir, images, job.threads)
        if report.problems:
            failed.append(report.failure(dataset, images_dir))
            continue
        summary = f"imgshard: verify: {dataset}: all {report.checked} images match their sources"
        print(summary, file=sys.stderr)
        print(summary)
    if failed:
        raise ImgshardError("\n".join(failed))
