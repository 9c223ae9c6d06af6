"""Rule verify: the dataset against its sources (see imgshard/verify.py)."""

import os
import sys

# Everything under the guard: spawn and forkserver workers re-run this file as
# a plain module, without the preamble that defines `snakemake`.
if __name__ == "__main__":
    # Snakemake runs a copy of this file; the package sits beside the original.
    sys.path.insert(0, os.path.dirname(snakemake.scriptdir))  # noqa: F821
    from imgshard.jobs import run_job, verify_job

    run_job(snakemake.log[0], verify_job, snakemake)  # noqa: F821
