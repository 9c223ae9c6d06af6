# What a run shows while its shard jobs decode (one live progress line) and at
# its end (one summary line per dataset), and what it tidies when it ends.
import atexit
import threading
import time

from imgshard.steps.args import prune_spilled
from imgshard.publish.snapshots import tidy
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


def at_exit(datasets):
    """At the end of every run that built (or found up to date) its datasets: one summary line each (a
    failed run has said what failed; verify and report runs build nothing), and the snapshots no reader
    holds any more removed where no gather ran to do it ("Nothing to be done" too)."""
    if not workflow.is_main_process or workflow.dryrun or RUN_FAILED:
        return
    dag = getattr(workflow, "_dag", None)
    if dag is None:
        return  # --lint, --unlock and the like: no build to speak of
    gathered = {
        DATASETS[job.wildcards.dataset].output
        for job in dag.jobs
        if job.rule.name.endswith("gather")
    }
    for output, (layout, shard_stats) in datasets.items():
        if output not in gathered:
            continue  # not a target of this run
        if not quiet():
            print(
                summary(output, layout.stats, shard_stats, RUN_STARTED), file=sys.stderr
            )
        if (
            not os.path.exists(layout.stats)
            or os.stat(layout.stats).st_mtime < RUN_STARTED
        ):
            # No gather ran to remove what readers let go of since the last one: do it here.
            released = tidy(layout.output, config["keep_snapshots"])
            if released and not quiet():
                print(
                    f"imgshard: {output}: removed {released} snapshots no reader holds any more",
                    file=sys.stderr,
                )


# Absolute: Snakemake has gone back to the folder it started in when this runs.
atexit.register(
    at_exit,
    {
        d.output: (
            Layout(os.path.abspath(d.output)),
            [os.path.abspath(d.layout.shard_stats(name)) for name in d.shard_names],
        )
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
