# imgshard: a folder of images -> hash-sharded parallel decode into shared memory
# -> one HDF5 shard file per shard -> one dataset. See README.md.
import os
import re
import sys

from snakemake.utils import min_version, validate

min_version("9.0")

# This checkout: the folder of this Snakefile, also when another workflow uses it
# as a module (workflow.basedir is then that workflow's folder).
IMGSHARD = workflow.current_basedir.get_path_or_uri(secret_free=False)
# The package beside this file holds the logic; rules and scripts import it.
sys.path.insert(0, IMGSHARD)
from imgshard import ImgshardError
from imgshard.plan.config import normalize, schema_error


# The defaults live next to the Snakefile, whatever the working directory;
# --configfile and --config are layered on top of them. A module's config
# (module ...: config: ...) replaces them; the schema fills in every key left out.
configfile: os.path.join(IMGSHARD, "config.yaml")


report: "workflow/report/workflow.rst"


SCHEMA = os.path.join(IMGSHARD, "workflow/schemas/config.schema.yaml")
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
include: "workflow/rules/run.smk"


rule all:
    default_target: True
    input:
        # The gather publishes each dataset file with its stats (see gather.smk).
        expand(FILES.stats, dataset=DATASETS),
