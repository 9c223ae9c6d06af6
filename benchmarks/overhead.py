"""The costs around decoding: resized builds against the serial loop and the decode limit,
mixed large photographs, reruns for one changed, added or removed image, the write
bandwidth of a full-size build, and what all of it predicts for 16 and 64 cores.

Called by bench.main; every figure is a median over rounds that rotate the order.
"""

from __future__ import annotations

import shutil
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from . import common

CLOUDS_SIZE = (350, 525)
PHOTO_SIZE = (384, 512)


def resized(data: Path, images: Path, count: int, cores: int, rounds: int) -> dict:
    """``count`` Clouds-size JPEGs to 350x525: the pipeline (default config), the serial loop and the limit.

    Also the pipeline with ``reducing_gap: 1.0``, which decodes these images at
    1/4 as the limit does (the default 2.0 decodes them at 1/2): what the
    pipeline adds to the limit's own decode work. And the limit with
    ``cv2.imread`` for every file (``limit_imread``).
    """
    size = ",".join(map(str, CLOUDS_SIZE))
    runs: dict[str, list[float]] = {"pipeline": [], "serial": [], "limit": [], "limit_imread": [], "pipeline_gap_1": []}
    units = list(runs)
    for r in range(rounds):
        for unit in units[r % len(units) :] + units[: r % len(units)]:
            if unit.startswith("pipeline"):
                gap = {"reducing_gap": 1.0} if unit == "pipeline_gap_1" else {}
                m = common.pipeline(images, common.fresh(data / "work"), cores, image_size=f"[{size}]", **gap)
            else:
                m = common.contender(unit, images, data / "out.h5", cores, "--size", size)
            runs[unit].append(m.seconds)
    out = _medians(runs, count)
    out["pipeline_over_limit"] = round(out["pipeline"] / out["limit"], 2)
    out["speedup_over_serial"] = round(out["serial"] / out["pipeline"], 2)
    out["gap_1_over_limit"] = round(out["pipeline_gap_1"] / out["limit"], 2)
    out["pipeline_over_limit_imread"] = round(out["pipeline"] / out["limit_imread"], 2)
    common.say(f"resized {count}: {out}")
    return out


def photos(data: Path, cores: int, rounds: int, per_kind: int = 4, scale: float = 1.0) -> dict:
    """Large mixed photographs (JPEG 1920x1080 to 5120x2880, RGBA PNG, 4096x4096 WebP) to 384x512."""
    folder = make_photos(data / f"mixed-{per_kind}-{scale}", per_kind, scale)
    size = ",".join(map(str, PHOTO_SIZE))
    runs: dict[str, list[float]] = {"pipeline": [], "serial": []}
    for r in range(rounds):
        for unit in (["pipeline", "serial"] if r % 2 == 0 else ["serial", "pipeline"]):
            if unit == "pipeline":
                m = common.pipeline(folder, common.fresh(data / "work"), cores, image_size=f"[{size}]")
            else:
                m = common.contender("serial", folder, data / "out.h5", cores, "--size", size)
            runs[unit].append(m.seconds)
    count = len([p for p in folder.iterdir() if p.suffix != ".complete" and not p.name.startswith(".")])
    out = _medians(runs, count)
    out["speedup_over_serial"] = round(out["serial"] / out["pipeline"], 2)
    out["grey_levels"] = fidelity(data / "work/results/dataset.h5", folder)  # the last pipeline build's rows
    common.say(f"photos: {out}")
    return out


def fidelity(dataset: Path, folder: Path) -> dict[str, float]:
    """Mean absolute difference of each stored row from INTER_AREA on a full decode, by format: the mean and the worst image."""
    import h5py

    by_kind: dict[str, list[float]] = {}
    with h5py.File(dataset) as f:
        for rel, row in zip(f["paths"].asstr(), f["images"]):
            full = cv2.imread(str(folder / rel), cv2.IMREAD_COLOR_RGB)
            reference = cv2.resize(full, (row.shape[1], row.shape[0]), interpolation=cv2.INTER_AREA)
            by_kind.setdefault(Path(rel).suffix, []).append(float(np.abs(row.astype(int) - reference).mean()))
    out = {f"{kind[1:]}_mean": round(statistics.mean(v), 3) for kind, v in sorted(by_kind.items())}
    return out | {"max": round(max(max(v) for v in by_kind.values()), 3)}


# (width, height, extension): phone and camera JPEGs, screenshots with alpha, a large WebP.
PHOTO_KINDS = [(1920, 1080, ".jpg"), (2560, 1600, ".jpg"), (4032, 3024, ".jpg"), (5120, 2880, ".jpg"), (2560, 1600, ".png"), (4096, 4096, ".webp")]


def make_photos(folder: Path, per_kind: int, scale: float = 1.0) -> Path:
    from imgshard.tools.demo import photo_image

    if (folder / ".complete").exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for w, h, ext in PHOTO_KINDS:
        w, h = int(w * scale), int(h * scale)
        for k in range(per_kind):
            bgr = cv2.cvtColor(photo_image(w * 7 + k, h, w), cv2.COLOR_RGB2BGR)
            if ext == ".png":  # RGBA, as screenshots and cut-outs come
                alpha = np.linspace(64, 255, w, dtype=np.uint8)[None, :].repeat(h, 0)
                bgr = np.dstack([bgr, alpha])
            params = [cv2.IMWRITE_JPEG_QUALITY, 92] if ext == ".jpg" else [cv2.IMWRITE_WEBP_QUALITY, 90] if ext == ".webp" else []
            cv2.imwrite(str(folder / f"{w}x{h}-{k}{ext}"), bgr, params)
    (folder / ".complete").touch()
    return folder


def reruns(data: Path, images: Path, count: int, cores: int, rounds: int, **config) -> dict:
    """No-op rerun, and reruns for one changed, one added and one removed image, in a copy of ``images``."""
    work = common.fresh(data / "work")
    folder = data / f"rerun-{count}"
    copy_set(images, folder, count)
    build = common.pipeline(folder, work, cores, **config).seconds
    files = sorted(folder.glob("*.jpg"))
    runs: dict[str, list[float]] = {"noop": [], "changed": [], "added": [], "removed": []}
    for r in range(rounds):
        runs["noop"].append(common.pipeline(folder, work, cores, **config).seconds)
        victim = files[(r * 7919) % len(files)]
        cv2.imwrite(str(victim), cv2.imread(str(victim)), [cv2.IMWRITE_JPEG_QUALITY, 80 + r])
        runs["changed"].append(common.pipeline(folder, work, cores, **config).seconds)
        added = folder / f"added-{r}.jpg"
        shutil.copyfile(files[(r * 31) % len(files)], added)
        runs["added"].append(common.pipeline(folder, work, cores, **config).seconds)
        added.unlink()
        runs["removed"].append(common.pipeline(folder, work, cores, **config).seconds)
    out = {"images": count, "config": {k: str(v) for k, v in config.items()}, "build": round(build, 2)}
    out |= {k: round(statistics.median(v), 2) for k, v in runs.items()}
    for key in ("changed", "added", "removed"):
        out[f"{key}_over_noop"] = round(out[key] / out["noop"], 2)
    common.say(f"reruns {count}: {out}")
    shutil.rmtree(work, ignore_errors=True)
    return out


def copy_set(images: Path, folder: Path, count: int) -> None:
    """``count`` JPEGs made of copies of ``images`` (real copies: changing one must change one)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    sources = sorted(images.glob("*.jpg"))
    for k in range(count):
        src = sources[k % len(sources)]
        shutil.copyfile(src, folder / f"c{k // len(sources):02d}-{src.name}")


def plain_write(folder: Path, nbytes: int, block: int) -> float:
    """Seconds to write ``nbytes`` to a new file in ``block``-byte writes, closed, not synced (as HDF5 writes)."""
    buf = np.random.default_rng(0).integers(0, 256, block, dtype=np.uint8).tobytes()
    path = folder / "plain-write.bin"
    started = time.perf_counter()
    with open(path, "wb") as f:
        for _ in range(nbytes // block):
            f.write(buf)
    seconds = time.perf_counter() - started
    path.unlink()
    return seconds


def write_bandwidth(data: Path, n: int, size: tuple[int, int], pipeline_seconds: float, write_seconds: float) -> dict:
    nbytes = n * size[0] * size[1] * 3
    plain = statistics.median(plain_write(data, nbytes, size[0] * size[1] * 3) for _ in range(3))
    gbps = lambda s: round(nbytes / s / 1e9, 2)  # noqa: E731
    out = {
        "bytes": nbytes,
        "plain_write_gb_s": gbps(plain),
        "pipeline_end_to_end_gb_s": gbps(pipeline_seconds),
        "shard_write_phase_gb_s": gbps(write_seconds) if write_seconds else None,
    }
    common.say(f"write bandwidth: {out}")
    return out


def estimate(resized_builds: list[dict], reruns_small: dict, cores: int, bandwidth: dict, shards: int) -> dict:
    """From this run's own figures, a resized build of 100,000 Clouds images at this many cores, 16 and 64.

    Per image: what the largest resized build cost beyond a no-op run, in core-seconds (decoding,
    hashing, job starts, writing, gather: everything that grows with images). Writing is bounded
    by the disk (a plain write) and by one writer per shard job, at most ``shards`` of them.
    """
    n = 100_000
    big = max(resized_builds, key=lambda x: x["images"])
    fixed = reruns_small["noop"]  # Snakemake's start, scan and DAG
    per_image = (big["pipeline"] - fixed) * cores / big["images"]
    row_bytes = CLOUDS_SIZE[0] * CLOUDS_SIZE[1] * 3
    disk = bandwidth["plain_write_gb_s"]
    writer = bandwidth["shard_write_phase_gb_s"] or disk
    rows = []
    for c in (cores, 16, 64):
        work = n * per_image / c
        write = n * row_bytes / 1e9 / min(disk, writer * min(shards, c))
        rows.append(
            {
                "cores": c,
                "work_s": round(work, 1),
                "write_s": round(write, 1),
                "total_s": round(fixed + max(work, write), 1),
                "bound": "cores" if work >= write else "disk" if disk <= writer * min(shards, c) else "writers",
            }
        )
    return {
        "images": n,
        "per_image_core_ms": round(1000 * per_image, 2),
        "limit_per_image_core_ms": round(1000 * big["limit"] * cores / big["images"], 2),
        "fixed_s": fixed,
        "row_bytes": row_bytes,
        "writers_gb_s": round(writer * shards, 2),
        "disk_gb_s": disk,
        "rows": rows,
    }


def _medians(runs: dict[str, list[float]], count: int) -> dict:
    out = {"images": count}
    out |= {k: round(statistics.median(v), 2) for k, v in runs.items()}
    return out


def targets(r: dict) -> list[tuple]:
    out = []
    for res in r.get("resized", []):
        bound = 2.0 if res["images"] <= 512 else 1.3
        out.append((f"resized build of {res['images']}: at most {bound}x the decode limit", f"<= {bound}", res["pipeline_over_limit"], res["pipeline_over_limit"] <= bound))
        if res["images"] <= 512:
            out.append((f"resized build of {res['images']}: at least 2.0x faster than the serial loop", ">= 2.0", res["speedup_over_serial"], res["speedup_over_serial"] >= 2.0))
    if r.get("photos"):
        s = r["photos"]["speedup_over_serial"]
        out.append(("mixed large photos: at least 1.8x the serial loop", ">= 1.8", s, s >= 1.8))
        g = r["photos"]["grey_levels"]["max"]
        out.append(("mixed large photos: every row within 1.0 grey level of a full decode's INTER_AREA", "<= 1.0", g, g <= 1.0))
    for rr in r.get("reruns", []):
        for key in ("changed", "added", "removed"):
            ratio = rr[f"{key}_over_noop"]
            out.append((f"one image {key} at {rr['images']:,}: at most 2x a no-op rerun", "<= 2.0", ratio, ratio <= 2.0))
    return out  # fmt: skip


def run(data: Path, images: Path, cores: int, rounds: int, counts: tuple[int, ...], rerun_counts: tuple[int, ...], photos_per_kind: int, photo_scale: float, height: int, width: int) -> dict:
    """Every measurement of this module; ``images`` is the full-size Clouds set of bench.main."""
    out: dict = {"resized": [], "reruns": []}
    for count in counts:
        folder = images if count == len(list(images.glob("*.jpg"))) else common.generate(data / f"full-{count}-{height}x{width}", count, height, width, cores)
        out["resized"].append(resized(data, folder, count, cores, rounds))
    if photos_per_kind:
        out["photos"] = photos(data, cores, rounds, photos_per_kind, photo_scale)
    for k, count in enumerate(rerun_counts):
        # The first at full size (the default config), the larger ones resized: 5,000 full-size rows are 44 GB.
        config = {} if k == 0 else {"image_size": f"[{CLOUDS_SIZE[0]},{CLOUDS_SIZE[1]}]"}
        out["reruns"].append(reruns(data, images, count, cores, max(1, rounds - 1), **config))
    shutil.rmtree(data / "work", ignore_errors=True)
    for count in rerun_counts:
        shutil.rmtree(data / f"rerun-{count}", ignore_errors=True)
    return out
