"""Config checks that a schema cannot express, and one-line messages for those it can."""

from __future__ import annotations

import difflib
import math

import jsonschema
import psutil
import yaml

from ..errors import ImgshardError


def physical_cores() -> int:
    # Hyper-threads share a core's decode units: counting them oversubscribes.
    return psutil.cpu_count(logical=False) or psutil.cpu_count() or 1


def resolve_workers(workers: int | str) -> int:
    return physical_cores() if workers == "auto" else int(workers)


def shard_workers(workers: int | str, shards: int, cores: int | None) -> int:
    """Worker processes of each shard job.

    auto shares the cores (physical ones, at most ``cores``) out over the
    shards: with fewer cores than shards, jobs of one worker each run side by
    side, so one job's start-up and writing overlap another's decoding (one
    job holding every core left them idle meanwhile); with more cores than
    shards, every job gets its share.
    """
    if workers != "auto":
        return int(workers)
    available = min(physical_cores(), cores) if cores else physical_cores()
    return max(1, math.ceil(available / shards))


def jobs_at_once(threads: int, cores: int | None) -> int:
    """Shard jobs of ``threads`` each that ``cores`` lets run side by side; 1 on a cluster (no ``cores``: a node each)."""
    return max(1, cores // max(1, min(threads, cores))) if cores else 1


def shard_shm_mb(budget_mb: int, threads: int, cores: int | None, row_bytes: int) -> int:
    """The shared memory one shard job may hold: ``shm_budget_mb`` shared out over the jobs that run at once.

    /dev/shm is one per machine. Jobs side by side that each sized their
    buffers to the whole budget (and to the free space each saw at its start)
    held twice the budget between them, and a write past a full /dev/shm is a
    SIGBUS. So each job gets the budget over the jobs ``cores`` lets run at
    once, but at least two rows while the budget holds them (a job with less
    would refuse to start over a rounding). On a cluster (no ``cores``) each
    job has a node, and the whole budget.
    """
    if not cores:
        return budget_mb
    at_once = jobs_at_once(threads, cores)
    two_rows = math.ceil(2 * row_bytes / 2**20)
    return max(budget_mb // at_once, min(budget_mb, two_rows))


def normalize(config: dict) -> dict:
    """Undo what ``--config`` does to values (``image_size=[256,256]`` arrives as strings, so may
    ``reducing_gap=3`` and ``reuse=false``), and read one number for ``image_size`` as a square."""
    for key in ("reuse", "check_disk_space"):
        if isinstance(config.get(key), str) and config[key].lower() in ("true", "false"):
            config[key] = config[key].lower() == "true"
    for settings in [config, *(config.get("datasets") or {}).values()]:
        if not isinstance(settings, dict):
            continue
        size = settings.get("image_size")
        if isinstance(size, list) and all(isinstance(v, str) and v.strip().isdigit() for v in size):
            size = [int(v) for v in size]
        elif isinstance(size, str) and size.strip().isdigit():
            size = int(size)
        # One number is a square: 224 and [224] mean [224, 224].
        if isinstance(size, int) and not isinstance(size, bool):
            size = [size, size]
        elif isinstance(size, list) and len(size) == 1:
            size = size * 2
        if "image_size" in settings:
            settings["image_size"] = size
        gap = settings.get("reducing_gap")
        if isinstance(gap, str):
            try:
                settings["reducing_gap"] = float(gap)
            except ValueError:
                pass  # the schema names it
    return config


def schema_defaults(schema_path: str) -> dict:
    """The default of every top-level key, as the schema gives it."""
    with open(schema_path) as f:
        schema = yaml.safe_load(f)
    return {key: spec.get("default") for key, spec in schema["properties"].items()}


def schema_error(config: dict, schema_path: str) -> ImgshardError:
    """The config's most relevant schema violation as one line naming the key and its value."""
    with open(schema_path) as f:
        schema = yaml.safe_load(f)
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(config))
    if error is None:
        return ImgshardError("config: invalid")
    while error.parent is not None:
        # An error inside oneOf names one branch ("not of type integer"); the
        # oneOf itself can say every allowed form.
        error = error.parent
    key = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    if error.validator == "additionalProperties":
        known = sorted(error.schema.get("properties", {}))
        where = f" in {key}" if error.absolute_path else ""
        unknown = [k for k in error.instance if k not in known]
        guesses = [(k, difflib.get_close_matches(k, known, n=1)) for k in unknown]
        hints = "; ".join(f"did you mean {g[0]!r} for {k!r}?" for k, g in guesses if g)
        if hints:
            return ImgshardError(f"config: {error.message}{where}: {hints}")
        return ImgshardError(f"config: {error.message}{where} (known keys: {', '.join(known)})")
    if error.validator == "required":
        return ImgshardError(f"config: {key}: {error.message}")
    allowed = error.schema.get("description") or ""
    if error.validator in ("enum", "oneOf") or not allowed:
        allowed = _allowed(error.schema)
    return ImgshardError(f"config: {key} = {error.instance!r} is invalid: {error.message}" + (f"; {allowed}" if allowed else ""))


def _allowed(schema: dict) -> str:
    if "enum" in schema:
        return "one of: " + ", ".join(map(str, schema["enum"]))
    if "oneOf" in schema:
        options = [
            o["description"] if "description" in o
            else f"an integer >= {o['minimum']}" if "minimum" in o else repr(o["const"]) if "const" in o else o.get("type", "")
            for o in schema["oneOf"]
        ]
        return "expected " + " or ".join(options)
    return ""
