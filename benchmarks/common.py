"""What every part of the benchmark shares: running the pipeline, the contenders, and generated image sets."""

from __future__ import annotations

import shutil
import sys
from multiprocessing import Pool
from pathlib import Path

from imgshard.tools.demo import write_demo

from . import measure

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def say(message: str) -> None:
    print(f"[bench] {message}", flush=True)


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def generate(folder: Path, count: int, height: int, width: int, cores: int) -> Path:
    """The deterministic cloud images, made once (in parallel) and kept for later runs."""
    stamp = folder / ".complete"
    if not stamp.exists():
        shutil.rmtree(folder, ignore_errors=True)
        say(f"generating {count} images of {height}x{width} in {folder}")
        step = max(1, -(-count // (cores * 4)))
        with Pool(cores) as pool:
            pool.starmap(
                write_demo,
                [(str(folder), min(step, count - first), height, width, 2019, first) for first in range(0, count, step)],
            )
        stamp.touch()
    return folder


def contender(name: str, images: Path, out: Path, cores: int, *extra: str) -> measure.Measured:
    cmd = [sys.executable, "-m", "benchmarks.contenders", name, str(images), str(out), "--cores", str(cores), *extra]
    m = measure.run(cmd, cwd=REPO)
    out.unlink(missing_ok=True)
    if name.startswith("limit"):  # one process's decode work, shared out ideally over the cores
        m.seconds /= cores
    return m


def default_shards() -> int:
    import yaml

    return yaml.safe_load((REPO / "config.yaml").read_text())["shards"]


def snakemake_cmd(images: Path, work: Path, cores: int, **config) -> list[str]:
    settings = {"images_dir": images, **config}
    return [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(work), "--cores", str(cores), "-q", "--config"] + [
        f"{k}={v}" for k, v in settings.items()
    ]


def pipeline(images: Path, work: Path, cores: int, **config) -> measure.Measured:
    return measure.run(snakemake_cmd(images, work, cores, **config))
