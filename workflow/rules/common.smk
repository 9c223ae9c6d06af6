# Discovery and sharding happen here, when the workflow is parsed. Each shard
# job's input is its manifest (its images' paths, sizes and mtimes), rewritten
# only when one of them changes: Snakemake's own rerun triggers then redo
# exactly the shards whose images changed, while tracking one file per shard.
# One run builds one dataset or several, so the rules take a {dataset} wildcard.
import atexit
import shlex
import threading
import time

from snakemake.settings.types import DeploymentMethod

from imgshard.config import (
    jobs_at_once,
    resolve_workers,
    schema_defaults,
    shard_shm_mb,
    shard_workers,
)
from imgshard.index import FORMAT
from imgshard.jobs import job_argument, prune_spilled
from imgshard.plan import plan
from imgshard.progress import Monitor, progress_file, summary
from imgshard.publish import redo_what_is_damaged
from imgshard.space import check_free_space

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
# Only the run itself: a job on a cluster node parses this file too, while others write.
for _dataset in DATASETS.values() if workflow.is_main_process else []:
    _indexes = [
        f"{_dataset.stem}.shards/shard-{name}.h5" for name in _dataset.shard_names
    ]
    for _problem in redo_what_is_damaged(
        _dataset.output, f"{_dataset.stem}.stats.json", _indexes
    ):
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
    one JSON argument for the job's script (see imgshard/jobs.py).

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
    names = get_dataset(wildcards).shard_names
    return expand(
        f"{RESULTS}{wildcards.dataset}.shards/shard-{{shard}}.h5", shard=names
    )


def get_shard_stats(wildcards):
    names = get_dataset(wildcards).shard_names
    return expand(
        f"{RESULTS}{wildcards.dataset}.shards/shard-{{shard}}.json", shard=names
    )


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


RUN_STARTED = time.time()
RUN_FAILED = []  # onerror notes it
_monitor = []


def get_progress_file(wildcards, threads):
    return progress_file(wildcards.dataset, wildcards.shard)


def quiet():
    from snakemake.settings.enums import Quietness

    shown = workflow.output_settings.quiet or set()
    return bool({Quietness.ALL, Quietness.PROGRESS} & set(shown))


def start_progress():
    """The live progress line over the shard jobs this run runs (imgshard/progress.py)."""
    if quiet():
        return
    jobs = {}
    for job in workflow.dag.needrun_jobs():
        if job.rule.name.endswith("decode_shard"):  # a module's rule has a prefix
            dataset, shard = job.wildcards.dataset, job.wildcards.shard
            images = len(DATASETS[dataset].shards[int(shard)])
            jobs[(dataset, shard)] = (
                images,
                f"{DATASETS[dataset].stem}.shards/shard-{shard}.json",
            )
    _monitor.append(Monitor(jobs))
    _monitor[-1].start()


def stop_progress():
    for monitor in _monitor:
        monitor.stop()


def print_summaries(stats_files):
    """At the end of every run that built (or found up to date) a dataset: one line for it (a failed
    run has said what failed; verify and report runs build nothing)."""
    if quiet() or not workflow.is_main_process or workflow.dryrun or RUN_FAILED:
        return
    dag = getattr(workflow, "_dag", None)
    if dag is None:
        return  # --lint, --unlock and the like: no build to speak of
    gathered = {
        DATASETS[job.wildcards.dataset].output
        for job in dag.jobs
        if job.rule.name.endswith("gather")
    }
    for output, stats in stats_files.items():
        if output in gathered:
            print(summary(output, stats, RUN_STARTED), file=sys.stderr)


# Absolute: Snakemake has gone back to the folder it started in when this runs.
atexit.register(
    print_summaries,
    {
        d.output: [
            os.path.abspath(f"{d.stem}.shards/shard-{name}.json")
            for name in d.shard_names
        ]
        for d in DATASETS.values()
    },
)


def cancel_idle_timers():
    """Let a finished run exit at once.

    Snakemake's job rate limiter (--max-jobs-per-timespan, 100/1s by default)
    starts a one-second non-daemon threading.Timer each time its scheduler
    waits; the last one kept every run that executed a job alive for up to a
    second after its last job. The scheduler has returned: nobody waits on them.
    """
    for thread in threading.enumerate():
        if isinstance(thread, threading.Timer):
            thread.cancel()
