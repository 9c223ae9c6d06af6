"""Rule gather: the shard files into the final dataset (see imgshard/gather.py)."""

import os
import sys

sys.path.insert(0, os.path.dirname(snakemake.scriptdir))  # noqa: F821

from imgshard.jobs import gather_job, run_job  # noqa: E402

if __name__ == "__main__":
    run_job(snakemake.log[0], gather_job, snakemake)  # noqa: F821
