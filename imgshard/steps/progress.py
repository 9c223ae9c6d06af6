"""One live progress line for the whole build in the terminal, and one summary line per dataset at its end.

Snakemake shows job blocks and "N of M steps done", a line that does not move
while a quarter of the build decodes in one shard job. Each running shard job
writes how far it is to a small file (``Reporter``, once per task its workers
finish: a few dozen per batch, however many images);
the Snakemake process reads them once a second (``Monitor``) and shows images
done of the total, images/s and the time left: on a terminal one line
redrawn in place (cleared before each of Snakemake's own messages), elsewhere
a line every ten seconds. ``-q`` shows neither.

At the end of every run, ``summary`` says per dataset what changed against the
dataset published before the run (images added, changed, removed), what its
shard jobs did (decoded, kept, shards rebuilt), and names the images left out.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import threading
import time

PROGRESS_DIR = os.path.join(".snakemake", "imgshard-progress")


class Reporter:
    """A shard job's side: ``done`` of ``total`` images to a file the Snakemake process reads."""

    def __init__(self, path: str | None, total: int, done: int = 0):
        self.path, self.total, self.done = path, total, done
        if path:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            self._write()

    def update(self, count: int) -> None:
        self.done += count
        if self.path:
            self._write()

    def _write(self) -> None:
        tmp = f"{self.path}.tmp-{os.getpid()}"
        with contextlib.suppress(OSError):  # progress is a courtesy: never fail a job over it
            with open(tmp, "w") as f:
                f.write(f"{self.done} {self.total}\n")
            os.replace(tmp, self.path)

    def close(self) -> None:
        if self.path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


def progress_file(dataset: str, shard: str) -> str:
    return os.path.join(PROGRESS_DIR, f"{dataset}-{shard}")


class Monitor:
    """The Snakemake process's side: the shard jobs this run runs, ``{(dataset, shard): (images, stats file)}``."""

    def __init__(self, jobs: dict[tuple[str, str], tuple[int, str]], stream=None):
        self.jobs = jobs
        self.total = sum(n for n, _ in jobs.values())
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.started = time.time()
        self._stop = threading.Event()
        self._shown = ""
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="imgshard-progress", daemon=True)

    def start(self) -> None:
        if not self.total:
            return
        if self.tty:
            # Snakemake's own messages go to a clean line: this one is cleared before each, redrawn after.
            for handler in logging.getLogger("snakemake").handlers + logging.getLogger().handlers:
                handler.addFilter(self._clear)
        self._thread.start()

    def _clear(self, record) -> bool:
        with self._lock:
            if self._shown:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
                self._shown = ""
        return True

    def done(self) -> int:
        count = 0
        for (dataset, shard), (images, stats) in self.jobs.items():
            try:
                with open(progress_file(dataset, shard)) as f:
                    count += int(f.read().split()[0])
                    continue
            except (OSError, ValueError, IndexError):
                pass
            with contextlib.suppress(OSError):
                if os.stat(stats).st_mtime >= self.started:  # finished in this run
                    count += images
        return count

    def line(self) -> str:
        done = self.done()
        seconds = time.time() - self.started
        rate = done / seconds if seconds > 0 else 0.0
        left = f", {_duration((self.total - done) / rate)} left" if rate > 0 and done < self.total else ""
        return f"imgshard: {done:,} of {self.total:,} images ({100 * done / self.total:.0f}%), {rate:,.0f} images/s{left}"

    def _run(self) -> None:
        last_print = 0.0
        while not self._stop.wait(1.0):
            line = self.line()
            with self._lock:
                if self.tty:
                    self.stream.write("\r\x1b[K" + line)
                    self._shown = line
                elif time.monotonic() - last_print >= 10 and line != self._shown:
                    self.stream.write(line + "\n")
                    self._shown, last_print = line, time.monotonic()
                self.stream.flush()

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._stop.set()
        self._thread.join()
        self._clear(None)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"


def summary(output: str, dataset_stats: str, stats_files: list[str], since: float) -> str:
    """One line for a dataset: images added, changed and removed against the dataset published before
    this run (the gather's ``changes``), what this run's shard jobs decoded and kept, and the images
    the dataset leaves out, by name; or that no shard had to be rebuilt."""
    ran = [s for s in map(_since(since), stats_files) if s is not None]
    gathered = _since(since)(dataset_stats)
    if not ran and gathered is None:
        return f"imgshard: {output}: up to date, no shard rebuilt"
    change = (gathered or {}).get("changes") or {}
    decoded, kept = sum(s.get("decoded", 0) for s in ran), sum(s.get("reused", 0) for s in ran)
    # Rows kept when nothing was published yet come from the shards of a run that did not finish.
    kept_from = " kept from an unfinished run" if kept and change.get("published_before") is False else " kept"
    names = change.get("skipped", [])
    skipped = f", {len(names)} skipped ({', '.join(names[:3])}{', ...' if len(names) > 3 else ''})" if names else ""
    return (
        f"imgshard: {output}: {len(ran)} of {len(stats_files)} shards rebuilt: {_images(change.get('added', 0))} added,"
        f" {change.get('changed', 0)} changed, {change.get('removed', 0)} removed; {decoded} decoded, {kept}{kept_from}{skipped}"
    )


def _since(since: float):
    """A reader of a stats file written since ``since`` (None for one older, missing or unreadable)."""

    def read(path: str) -> dict | None:
        try:
            if os.stat(path).st_mtime >= since:
                with open(path) as f:
                    return json.load(f)
        except (OSError, ValueError):
            pass
        return None

    return read


def _images(n: int) -> str:
    return f"{n} image" if n == 1 else f"{n} images"
