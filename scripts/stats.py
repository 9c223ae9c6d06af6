"""Rule stats: the shards' stats files into one (see imgshard/jobs.py)."""

import os
import sys

if __name__ == "__main__":
    # Snakemake runs a copy of this file; the package sits beside the original.
    sys.path.insert(0, os.path.dirname(snakemake.scriptdir))  # noqa: F821
    from imgshard.jobs import run_job, stats_job

    run_job(snakemake.log[0], stats_job, snakemake)  # noqa: F821
