# What a run shows while its shard jobs decode (one live progress line) and at
# its end (one summary line per dataset), and what it tidies when it ends.
import atexit
import threading
import time

from imgshard.steps.args import prune_spilled
from imgshard.steps.progress import Monitor, summary

RUN_STARTED = time.time()
RUN_FAILED = []  # onerror notes it
_monitor = []


def quiet():
    from snakemake.settings.enums import Quietness

    shown = workflow.output_settings.quiet or set()
    return bool({Quietness.ALL, Quietness.PROGRESS} & set(shown))


def start_progress():
    """The live progress line over the shard jobs this run runs (imgshard/steps/progress.py)."""
    if quiet():
        return
    jobs = {}
    for job in workflow.dag.needrun_jobs():
        if job.rule.name.endswith("decode_shard"):  # a module's rule has a prefix
            dataset, shard = job.wildcards.dataset, job.wildcards.shard
            images = len(DATASETS[dataset].shards[int(shard)])
            jobs[(dataset, shard)] = (
                images,
                DATASETS[dataset].layout.shard_stats(shard),
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
            os.path.abspath(d.layout.shard_stats(name)) for name in d.shard_names
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


# Snakemake skips these on "Nothing to be done"; the next run with jobs prunes then.
onstart:
    start_progress()


onsuccess:
    stop_progress()
    cancel_idle_timers()
    prune_spilled()


onerror:
    RUN_FAILED.append(True)
    stop_progress()
    cancel_idle_timers()
    prune_spilled()
