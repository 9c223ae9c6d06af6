# Discovery and sharding happen here, when the workflow is parsed (imgshard/plan/).
# Each shard job's input is its manifest (its images' paths, sizes and mtimes),
# rewritten only when one of them changes: Snakemake's own rerun triggers then
# redo exactly the shards whose images changed, while tracking one file per shard.
# One run builds one dataset or several, so the rules take a {dataset} wildcard.
# This file holds that planning and the get_* functions the rules call; run.smk
# what a run shows while and after it runs.
import shlex

from snakemake.settings.types import DeploymentMethod

from imgshard.format import FORMAT
from imgshard.layout import Layout
from imgshard.plan.config import (
    jobs_at_once,
    resolve_workers,
    schema_defaults,
    shard_shm_mb,
    shard_workers,
)
from imgshard.plan.damaged import redo_what_is_damaged
from imgshard.plan.datasets import plan
from imgshard.plan.space import check_free_space
from imgshard.steps.args import job_argument
from imgshard.steps.progress import progress_file

try:
    DATASETS = plan(config, schema_defaults(SCHEMA))
    if config["check_disk_space"]:
        check_free_space(DATASETS.values())
except ImgshardError as e:
    hint = ""
    if "'demo/" in str(e) and "is not a folder" in str(e):
        hint = " (`make demo` writes the demo images, or set images_dir to yours)"
    raise WorkflowError(f"{e}{hint}") from None

# All outputs of a run share one folder and extension: results/<dataset>.h5.
_first = next(iter(DATASETS.values()))
RESULTS = os.path.join(os.path.dirname(_first.output), "")
EXT = os.path.splitext(_first.output)[1]
# The rules' file patterns: results/{dataset}.shards/shard-{shard}.h5 and the like.
FILES = Layout(f"{RESULTS}{{dataset}}{EXT}")
# Only the run itself: a job on a cluster node parses this file too, while others write.
for _dataset in DATASETS.values() if workflow.is_main_process else []:
    for _problem in redo_what_is_damaged(_dataset.layout, _dataset.shard_names):
        print(f"imgshard: {_problem}", file=sys.stderr)
WORKERS = resolve_workers(config["workers"])

# A job's Python: this one's, as `script:` would pick it, unless the job runs in
# a conda environment of its own (--sdm conda), whose python is on PATH.
PYTHON = (
    "python"
    if DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
    else shlex.quote(sys.executable)
)
SCRIPTS = shlex.quote(os.path.join(IMGSHARD, "scripts"))


def get_run(name, resource_names=(), **options):
    """A params function: the command that runs scripts/<name>.py, with the job's
    threads, the resources named and ``options`` as name=value pairs.

    An option may be a function of the wildcards and threads. A shell command,
    not `script:`, whose preamble imports Snakemake into every job (0.1 s of a
    core each). Snakemake leaves params computed from threads or
    resources out of its rerun trigger, and the command's text (the rule's
    `shell:`) names none of this: a change of the Python, of the checkout's
    folder, of threads, shared memory or ``options`` reruns nothing.
    """

    def run(wildcards, threads, resources):
        pairs = {
            "threads": threads,
            **{r: getattr(resources, r) for r in resource_names},
            **{
                k: v(wildcards, threads) if callable(v) else v
                for k, v in options.items()
            },
        }
        args = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in pairs.items())
        return f"{PYTHON} {SCRIPTS}/{name}.py {args}"

    return run


def get_job(**settings):
    """A params function: ``settings`` (values, or functions of the wildcards) as
    one JSON argument for the job's script (see imgshard/steps/args.py).

    Of the wildcards only, so that a changed setting reruns the job: Snakemake
    leaves params computed from a job's input, output, threads or resources out
    of its rerun trigger.
    """

    def job(wildcards):
        return job_argument(
            {k: v(wildcards) if callable(v) else v for k, v in settings.items()}
        )

    return job


def get_dataset(wildcards):
    return DATASETS[wildcards.dataset]


def get_manifest(wildcards):
    return get_dataset(wildcards).manifest(int(wildcards.shard))


def get_cores():
    """The cores this run's jobs share; None on a cluster, where each job has a node of its own."""
    if not workflow.local_exec:
        return None
    try:
        return workflow.cores
    except WorkflowError:  # no --cores
        return None


def get_shard_workers(wildcards):
    return shard_workers(
        config["workers"], len(get_dataset(wildcards).shards), get_cores()
    )


def get_shard_shm_mb(wildcards, threads):
    return shard_shm_mb(
        config["shm_budget_mb"], threads, get_cores(), get_dataset(wildcards).row_bytes
    )


def get_jobs_at_once(wildcards, threads):
    """Shard jobs that may run side by side, sharing this machine's /dev/shm."""
    return jobs_at_once(threads, get_cores())


def get_shard_mem_mb(wildcards, threads):
    # On a cluster: the buffers (shm counts as the job's memory there) plus the processes themselves.
    return get_shard_shm_mb(wildcards, threads) + 2048


def get_shard_priority(wildcards):
    # In kB: Snakemake's scheduler weighs priorities in an integer program, where
    # bytes (1e10 for a large shard) would be needlessly large numbers.
    return round(get_dataset(wildcards).shard_bytes[int(wildcards.shard)] / 1e3)


def get_setting(key):
    """An input function for one of the dataset's settings."""
    return lambda wildcards: get_dataset(wildcards).settings[key]


def get_progress_file(wildcards, threads):
    return progress_file(wildcards.dataset, wildcards.shard)


def get_labels_file(wildcards):
    # ancient: a new CSV's mtime alone redoes nothing; get_labels_digest says which shards changed.
    labels = get_dataset(wildcards).settings["labels"]
    return ancient(labels) if labels and labels != "folders" else []


def get_classes(wildcards):
    """With labels: folders, the class names every shard's indices refer to (a new class folder shifts them)."""
    dataset = get_dataset(wildcards)
    return (
        list(dataset.labels.classes) if dataset.settings["labels"] == "folders" else []
    )


def get_labels_digest(wildcards):
    return get_dataset(wildcards).labels_digest(int(wildcards.shard))


def get_pixel_params(wildcards):
    return get_dataset(wildcards).pixel_params()


def get_shard_files(wildcards):
    dataset = get_dataset(wildcards)
    return [dataset.layout.index(name) for name in dataset.shard_names]


def get_shard_stats(wildcards):
    dataset = get_dataset(wildcards)
    return [dataset.layout.shard_stats(name) for name in dataset.shard_names]


def get_left_out(wildcards):
    return get_dataset(wildcards).left_out


def verify_params(names):
    """(dataset, images_dir, its shard manifests) of each dataset named, for the verify rules."""
    return [
        (
            DATASETS[n].output,
            DATASETS[n].settings["images_dir"],
            [DATASETS[n].manifest(i) for i in range(len(DATASETS[n].shards))],
        )
        for n in names
    ]
