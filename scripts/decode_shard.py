"""Rule decode_shard: one shard's images into one HDF5 shard file (see imgshard/decode.py)."""

import os
import sys

# Snakemake runs a copy of this file from .snakemake/scripts; find the package beside the original.
sys.path.insert(0, os.path.dirname(snakemake.scriptdir))  # noqa: F821

from imgshard.jobs import decode_shard_job, run_job  # noqa: E402

# The guard keeps spawn/forkserver workers, which re-import this file, from running the job again.
if __name__ == "__main__":
    run_job(snakemake.log[0], decode_shard_job, snakemake)  # noqa: F821
