"""Run a command and measure it: wall time, the largest process's peak RSS, peak /dev/shm use."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from dataclasses import dataclass

import psutil

MB = 1024 * 1024


@dataclass
class Measured:
    seconds: float
    peak_rss_mb: float  # of the largest single process in the tree (RSS counts mapped /dev/shm pages too)
    peak_shm_mb: float  # /dev/shm in use above what it held before
    root_rss_mb: float = 0.0  # of the command's own process (snakemake itself, not its jobs)
    output: str = ""


def run(cmd: list[str], interval: float = 0.05, **kwargs) -> Measured:
    base_shm = shutil.disk_usage("/dev/shm").used
    peaks = {"rss": 0, "shm": 0, "root": 0}
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)
    done = threading.Event()

    def sample() -> None:
        root = psutil.Process(proc.pid)
        while not done.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                procs = []
            for p in procs:
                try:
                    rss = p.memory_info().rss
                except psutil.Error:
                    continue
                peaks["rss"] = max(peaks["rss"], rss)
                if p.pid == proc.pid:
                    peaks["root"] = max(peaks["root"], rss)
            peaks["shm"] = max(peaks["shm"], shutil.disk_usage("/dev/shm").used - base_shm)
            done.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out[-3000:]}")
    return Measured(seconds, peaks["rss"] / MB, peaks["shm"] / MB, peaks["root"] / MB, out)
