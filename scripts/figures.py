"""Rule figures: contact sheet, throughput chart and stats table for the report (see imgshard/tools/figures.py)."""

import os
import sys

# Everything under the guard: spawn and forkserver workers re-run this file as
# a plain module.
if __name__ == "__main__":
    # The rule runs this file where it lies; the package sits beside its folder.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from imgshard.steps.run import run_step
    from imgshard.steps.figures import figures_job

    run_step(figures_job, sys.argv[1:])
