"""Rule decode_shard: one shard's images into one HDF5 shard file (see imgshard/build.py)."""

import os
import sys

# Everything under the guard: spawn and forkserver workers re-run this file as
# a plain module, without the preamble that defines `snakemake`.
if __name__ == "__main__":
    # Snakemake runs a copy of this file; the package sits beside the original.
    sys.path.insert(0, os.path.dirname(snakemake.scriptdir))  # noqa: F821
    from imgshard.jobs import decode_shard_job, run_job

    run_job(snakemake.log[0], decode_shard_job, snakemake)  # noqa: F821
