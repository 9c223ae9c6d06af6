"""Rule gather: the shards' indexes into a new snapshot of the dataset, published (see imgshard/publish/ and imgshard/steps/gather.py)."""

import os
import sys

# Everything under the guard: spawn and forkserver workers re-run this file as
# a plain module.
if __name__ == "__main__":
    # The rule runs this file where it lies; the package sits beside its folder.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from imgshard.steps.run import run_step
    from imgshard.steps.gather import gather_job

    run_step(gather_job, sys.argv[1:])
