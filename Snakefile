# imgshard: a folder of images -> hash-sharded parallel decode into shared memory
# -> one HDF5 shard file per shard -> one dataset. See README.md.
import os
import re
import sys

from snakemake.utils import min_version, validate

min_version("9.0")

# The package beside this file holds the logic; rules and scripts import it.
sys.path.insert(0, workflow.basedir)
from imgshard import ImgshardError
from imgshard.config import normalize, schema_error


# The defaults live next to the Snakefile, whatever the working directory;
# --configfile and --config are layered on top of them.
configfile: os.path.join(workflow.basedir, "config.yaml")


report: "workflow/report/workflow.rst"


SCHEMA = os.path.join(workflow.basedir, "workflow/schemas/config.schema.yaml")
try:
    validate(normalize(config), SCHEMA, set_default=True)
except WorkflowError:
    raise schema_error(config, SCHEMA) from None


include: "workflow/rules/common.smk"


wildcard_constraints:
    dataset="|".join(re.escape(name) for name in DATASETS),
    shard=r"\d+",


include: "workflow/rules/decode.smk"
include: "workflow/rules/gather.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/verify.smk"


# Snakemake skips both on "Nothing to be done"; the next run with jobs prunes then.
onsuccess:
    cancel_idle_timers()
    prune_spilled()


onerror:
    cancel_idle_timers()
    prune_spilled()


rule all:
    default_target: True
    input:
        # The gather publishes each dataset file with its stats (see gather.smk).
        expand(f"{RESULTS}{{dataset}}.stats.json", dataset=DATASETS),
