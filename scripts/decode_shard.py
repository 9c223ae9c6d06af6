"""Rule decode_shard: one shard's new and changed images into a part file, and the shard's index (see imgshard/build/shard.py)."""

import os
import sys

# Everything under the guard: spawn and forkserver workers re-run this file as
# a plain module.
if __name__ == "__main__":
    # The rule runs this file where it lies; the package sits beside its folder.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from imgshard.steps.run import run_step
    from imgshard.steps.decode_shard import decode_shard_job

    run_step(decode_shard_job, sys.argv[1:])
