"""Rule figures: contact sheet, throughput chart and stats table for the report (see imgshard/figures.py)."""

import os
import sys

if __name__ == "__main__":
    # Snakemake runs a copy of this file; the package sits beside the original.
    sys.path.insert(0, os.path.dirname(snakemake.scriptdir))  # noqa: F821
    from imgshard.jobs import figures_job, run_job

    run_job(snakemake.log[0], figures_job, snakemake)  # noqa: F821
