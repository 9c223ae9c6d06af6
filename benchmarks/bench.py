"""`make bench`: the pipeline against the serial loop, a process pool and the decode limit.

    python -m benchmarks.bench [--count 512] [--cores 2] [--rounds 3]

Every contender runs as its own process, in rounds that rotate the order so
that drift of a shared machine hits all alike; the table reports medians. It
also sweeps `workers`, checks /dev/shm against shm_budget_mb at two shard
sizes, and times a large set of small images. Results: benchmarks/results/
(results.md, results.json, speed.png, workers.png).
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import psutil

from . import measure, overhead, reading
from .common import REPO, contender, default_shards, fresh, generate, pipeline, say, snakemake_cmd

BUDGET_MB = 1024


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=512, help="images in the full-size set")
    parser.add_argument("--height", type=int, default=1400)
    parser.add_argument("--width", type=int, default=2100)
    parser.add_argument("--cores", type=int, default=psutil.cpu_count())
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shards", type=int, default=default_shards(), help="the pipeline's shard count (the project's default)")
    parser.add_argument("--resized", default="512,2048", help="image counts of the resized builds (350x525); empty skips them")
    parser.add_argument("--reruns", default="512,5000", help="image counts of the rerun test: the first full size, the rest resized")
    parser.add_argument("--mixed", type=int, default=12, help="large photographs per kind for the mixed set; 0 skips it")
    parser.add_argument("--mixed-scale", type=float, default=1.0, help="their sizes, scaled (the smoke test uses small ones)")
    parser.add_argument(
        "--scale", default="20000:64,100000:256,1000000:1024", help="IMAGES:SHARDS,... of tiny images in class folders; empty skips it"
    )
    parser.add_argument("--photos", type=int, default=3, help="photograph-like JPEGs per size for the reducing_gap test; 0 skips it")
    parser.add_argument("--read-count", type=int, default=4096, help="JPEGs of 300x400 in the 224x224 reading set; 0 skips reading")
    parser.add_argument("--open-rows", type=int, default=1_000_000, help="rows of the dataset a reader opens, timed")
    parser.add_argument("--read-seconds", type=float, default=1.0, help="each reader timed over whole epochs until this many seconds (0: one)")
    parser.add_argument("--read-clouds", type=int, default=1, help="1: also read the Clouds set at 350x525; 0: the 224x224 set only")
    parser.add_argument("--data", default=str(REPO / "benchmarks/.data"), help="generated images and work folders")
    parser.add_argument("--out", default=str(REPO / "benchmarks/results"))
    parser.add_argument("--replot", action="store_true", help="only redraw the charts and results.md from OUT/results.json")
    args = parser.parse_args(argv)
    if args.replot:
        results = json.loads((Path(args.out) / "results.json").read_text())
        (Path(args.out) / "results.md").write_text(markdown(results))
        charts(results, Path(args.out))
        return {}

    data, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images = generate(data / f"full-{args.count}-{args.height}x{args.width}", args.count, args.height, args.width, args.cores)
    n = args.count
    say(f"{n} images of {args.height}x{args.width} in {images}; {args.rounds} rounds on {args.cores} cores")

    runs: dict[str, list[measure.Measured]] = {k: [] for k in ("serial", "pool", "pipeline", "incremental", "limit")}
    breakdowns = []
    units = ["serial", "pool", "pipeline", "limit"]
    for r in range(args.rounds):
        for unit in units[r % len(units) :] + units[: r % len(units)]:
            if unit == "pipeline":
                work = fresh(data / "work")
                runs["pipeline"].append(pipeline(images, work, args.cores, shards=args.shards))
                breakdowns.append(breakdown(work, runs["pipeline"][-1].seconds))
                runs["incremental"].append(incremental(images, work, args.cores, args.shards, r))
            else:
                runs[unit].append(contender(unit, images, data / "out.h5", args.cores))
            say(f"round {r + 1}: {unit} {runs[unit][-1].seconds:.2f} s")

    shm_check = {}
    for shards in (args.shards, max(1, args.shards // 8)):
        m = pipeline(images, fresh(data / "work"), args.cores, shards=shards)
        shm_check[str(shards)] = {"images_per_shard": round(n / shards, 1), "peak_shm_mb": round(m.peak_shm_mb, 1)}
        say(f"pipeline with {shards} shards: peak /dev/shm {m.peak_shm_mb:.0f} MB (budget {BUDGET_MB})")

    sweep = []
    for workers in range(1, args.cores + 1):
        m = pipeline(images, fresh(data / "work"), args.cores, shards=args.shards, workers=workers)
        sweep.append({"workers": workers, "seconds": round(m.seconds, 3), "images_per_s": round(n / m.seconds, 2)})
        say(f"workers={workers}: {n / m.seconds:.1f} images/s")

    scale = []
    for count, shards in (tuple(map(int, item.split(":"))) for item in args.scale.split(",") if item):
        generated = generate_classes(data / f"classes-{count}", count)
        scale.append(scale_test(data, count, shards, args.cores, generated))
    gaps = reducing_gap_test(data, images, args.photos)
    counts = lambda text: tuple(int(v) for v in text.split(",") if v)  # noqa: E731
    around = overhead.run(data, images, args.cores, args.rounds, counts(args.resized), counts(args.reruns), args.mixed, args.mixed_scale, args.height, args.width)
    read = (
        reading.run(data, images, args.cores, args.rounds, args.read_count, args.open_rows, seconds=args.read_seconds, clouds_set=bool(args.read_clouds))
        if args.read_count
        else {}
    )
    results = report(args, n, runs, breakdowns, shm_check, sweep, scale, gaps, around, read)
    write_outputs(results, out)
    shutil.rmtree(data / "work", ignore_errors=True)
    return results


def incremental(images: Path, work: Path, cores: int, shards: int, r: int) -> measure.Measured:
    """Change one image's content, rebuild, then put the original bytes back."""
    files = sorted(images.glob("*.jpg"))
    victim = files[(r * 7919) % len(files)]
    original = victim.read_bytes()
    cv2.imwrite(str(victim), cv2.imread(str(victim)), [cv2.IMWRITE_JPEG_QUALITY, 70 + r])
    try:
        return pipeline(images, work, cores, shards=shards)
    finally:
        victim.write_bytes(original)


def breakdown(work: Path, wall: float) -> dict:
    """Where a fresh build's seconds went, from the shard jobs' own timing lines."""
    totals = {"startup": 0.0, "decode_wait": 0.0, "write": 0.0}
    for log in (work / "logs/decode_shard").rglob("*.log"):  # a folder per dataset
        for match in re.finditer(r"^timings (\{.*\})$", log.read_text(), flags=re.M):
            for key, value in json.loads(match.group(1)).items():
                if key in totals:
                    totals[key] += value
    totals["wall"] = wall
    return {k: round(v, 3) for k, v in totals.items()}


def generate_classes(folder: Path, count: int) -> float:
    """``count`` 16x16 JPEGs in class folders of 1,000, as ImageNet comes; seconds taken (0 if kept from before)."""
    if (folder / ".complete").exists():
        return 0.0
    started = time.perf_counter()
    shutil.rmtree(folder, ignore_errors=True)
    rng = np.random.default_rng(0)
    base = cv2.resize(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), (16, 16))
    for cls in range(-(-count // 1000)):
        sub = folder / f"n{cls:08d}"
        sub.mkdir(parents=True)
        for k in range(cls * 1000, min(count, cls * 1000 + 1000)):
            (sub / f"img_{k:07d}.JPEG").write_bytes(cv2.imencode(".jpg", np.roll(base, k % 16, axis=1))[1].tobytes())
    (folder / ".complete").touch()
    return time.perf_counter() - started


def scale_test(data: Path, count: int, shards: int, cores: int, generated: float) -> dict:
    """Dry run, build, no-op rerun and one-image rerun of ``count`` tiny images: Snakemake's own costs."""
    folder = data / f"classes-{count}"
    work = fresh(data / "work")
    cmd = snakemake_cmd(folder, work, cores, shards=shards)
    runs = {"dry_run": measure.run(cmd + ["-n"]), "build": measure.run(cmd), "noop": measure.run(cmd)}
    victim = folder / "n00000000/img_0000003.JPEG"
    original = victim.read_bytes()
    victim.write_bytes(cv2.imencode(".jpg", np.full((16, 16, 3), 99, np.uint8))[1].tobytes())
    try:
        runs["one_changed"] = measure.run([c for c in cmd if c != "-q"])  # its output names the jobs it ran
    finally:
        victim.write_bytes(original)
    out = {"images": count, "shards": shards, "generate_seconds": round(generated, 1)}
    for name, m in runs.items():
        out[f"{name}_seconds"] = round(m.seconds, 2)
        out[f"{name}_snakemake_rss_mb"] = round(m.root_rss_mb, 1)
    out["build_ms_per_image"] = round(1000 * runs["build"].seconds / count, 3)
    out["one_changed_shard_jobs"] = len(re.findall(r"^\s*(?:local)?rule decode_shard:$", runs["one_changed"].output, flags=re.M))
    say(f"scale: {count} images in {shards} shards: {out}")
    shutil.rmtree(work, ignore_errors=True)
    return out


def scale_targets(scale: list[dict]) -> list[tuple]:
    """Issue 11's targets, for the sizes measured."""
    by = {s["images"]: s for s in scale}
    targets = []
    if 20_000 in by and 100_000 in by:
        ratio = round(by[100_000]["build_ms_per_image"] / by[20_000]["build_ms_per_image"], 2)
        targets.append(("scale: build cost per image at 100,000 within 1.5x that at 20,000", "<= 1.5", ratio, ratio <= 1.5))
    if 100_000 in by:
        s = by[100_000]
        targets.append(("scale: no-op rerun at 100,000 under 2.5 s", "< 2.5", s["noop_seconds"], s["noop_seconds"] < 2.5))
        ratio = round(s["one_changed_seconds"] / s["noop_seconds"], 2)
        targets.append(("scale: one image changed at 100,000: one shard job, at most 2x the no-op", "<= 2.0, 1 job", f"{ratio}, {s['one_changed_shard_jobs']} job", ratio <= 2.0 and s["one_changed_shard_jobs"] == 1))
    big = max(by, default=0)
    if big > 100_000 and 20_000 in by:
        s = by[big]
        ratio = round(s["build_ms_per_image"] / by[20_000]["build_ms_per_image"], 2)
        targets.append((f"scale: {big:,} images build, at most 2x the cost per image at 20,000", "<= 2.0", ratio, ratio <= 2.0))
        targets.append((f"scale: Snakemake's peak memory at {big:,} under 1 GB", "< 1024", s["build_snakemake_rss_mb"], s["build_snakemake_rss_mb"] < 1024))
        if 100_000 in by:
            ratio = round(s["noop_seconds"] / by[100_000]["noop_seconds"], 2)
            targets.append((f"scale: no-op rerun at {big:,} at most 10x that at 100,000", "<= 10", ratio, ratio <= 10))
    return targets  # fmt: skip


# Sizes (width, height) of phone and camera photographs, and the size they are resized to.
PHOTO_SIZES = [(1920, 1080), (2560, 1600), (4032, 3024), (5640, 3172)]
PHOTO_TARGET = (384, 512)
CLOUDS_TARGET = (350, 525)


def reducing_gap_test(data: Path, clouds: Path, per_size: int) -> dict | None:
    """Fidelity and decode cost of each reducing_gap on photographs, and its cost on the Clouds set.

    One process, decode_into a preallocated row (as a worker does); the reference
    is a full decode followed by INTER_AREA.
    """
    if not per_size:
        return None
    from imgshard.pixels.decode import decode_into
    from imgshard.tools.demo import photo_image
    from imgshard.pixels.geometry import Geometry

    folder = data / f"photos-{per_size}"
    if not (folder / ".complete").exists():
        folder.mkdir(parents=True, exist_ok=True)
        for w, h in PHOTO_SIZES:
            for k in range(per_size):
                rgb = photo_image(w * 10 + k, h, w)
                cv2.imwrite(str(folder / f"{w}x{h}-{k}.jpg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
        (folder / ".complete").touch()
    cv2.setNumThreads(1)

    def measure_gap(paths: list[Path], target: tuple[int, int], gap: float | None, reference: dict) -> dict:
        geometry = Geometry(*target, resize="stretch", reducing_gap=gap)
        row = np.empty((*target, 3), np.uint8)
        diffs, times = [], []
        for path in paths:
            best = float("inf")
            for _ in range(3):
                t0 = time.perf_counter()
                decode_into(str(path), row, geometry)
                best = min(best, time.perf_counter() - t0)
            times.append(best)
            if path in reference:
                diffs.append(float(np.abs(row.astype(int) - reference[path]).mean()))
        out = {"ms_per_image": round(1000 * statistics.mean(times), 2)}
        if diffs:
            out |= {"mean_grey_levels": round(statistics.mean(diffs), 3), "max_grey_levels": round(max(diffs), 3)}
        return out

    photos = sorted(folder.glob("*.jpg"))
    reference = {
        p: cv2.resize(cv2.imread(str(p), cv2.IMREAD_COLOR_RGB), PHOTO_TARGET[::-1], interpolation=cv2.INTER_AREA) for p in photos
    }
    sample = sorted(clouds.glob("*.jpg"))[:64]
    result = {"photos": len(photos), "photo_target": list(PHOTO_TARGET), "clouds": len(sample), "clouds_target": list(CLOUDS_TARGET), "gaps": {}}
    for gap in (None, 1.0, 2.0):
        key = "null" if gap is None else str(gap)
        result["gaps"][key] = {
            "photos": measure_gap(photos, PHOTO_TARGET, gap, reference),
            "clouds": measure_gap(sample, CLOUDS_TARGET, gap, {}),
        }
        say(f"reducing_gap {key}: {result['gaps'][key]}")
    return result


def gap_targets(gaps: dict | None) -> list[tuple]:
    if not gaps:
        return []
    default = gaps["gaps"]["2.0"]["photos"]
    return [
        (
            "default reducing_gap (2.0): photographs within 1.0 grey level of a full decode",
            "<= 1.0",
            default["max_grey_levels"],
            default["max_grey_levels"] <= 1.0,
        )
    ]


def machine() -> dict:
    model = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    return {
        "cpu": model,
        "logical_cores": psutil.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "opencv": cv2.__version__,
        "date": time.strftime("%Y-%m-%d"),
    }


def report(args, n, runs, breakdowns, shm_check, sweep, scale, gaps, around, read) -> dict:
    median = {k: statistics.median(m.seconds for m in v) for k, v in runs.items()}
    rows = {}
    for name, measured in runs.items():
        rows[name] = {
            "seconds": round(median[name], 3),
            "all_seconds": [round(m.seconds, 3) for m in measured],
            "images_per_s": round(n / median[name], 2),
            "speedup_over_serial": round(median["serial"] / median[name], 2),
            "share_of_limit": round(median["limit"] / median[name], 2),
            "peak_rss_mb": round(max(m.peak_rss_mb for m in measured), 1),
            "peak_shm_mb": round(max(m.peak_shm_mb for m in measured), 1),
        }
    rows["incremental"]["share_of_fresh_build"] = round(median["incremental"] / median["pipeline"], 3)
    time_split = {k: round(statistics.median(b[k] for b in breakdowns), 3) for k in breakdowns[0]}
    targets = [
        ("pipeline at least 2.0x faster than serial", ">= 2.0", rows["pipeline"]["speedup_over_serial"], rows["pipeline"]["speedup_over_serial"] >= 2.0),
        ("pipeline at most 1.25x the limit", "<= 1.25", round(median["pipeline"] / median["limit"], 2), median["pipeline"] <= 1.25 * median["limit"]),
        ("one changed image costs at most 15% of a fresh build", "<= 0.15", rows["incremental"]["share_of_fresh_build"], rows["incremental"]["share_of_fresh_build"] <= 0.15),
        (f"peak /dev/shm within shm_budget_mb ({BUDGET_MB} MB) at both shard sizes", f"<= {BUDGET_MB}", max(v["peak_shm_mb"] for v in shm_check.values()), all(v["peak_shm_mb"] <= BUDGET_MB for v in shm_check.values())),
    ]  # fmt: skip
    targets += scale_targets(scale)
    targets += gap_targets(gaps)
    targets += overhead.targets(around)
    targets += reading.targets(read)
    # Full size: what the build wrote, against a plain write of the same bytes; and the estimate for more cores.
    around["write_bandwidth"] = overhead.write_bandwidth(Path(args.data), n, (args.height, args.width), median["pipeline"], time_split["write"])
    if around["resized"] and around["reruns"]:
        around["estimate"] = overhead.estimate(around["resized"], around["reruns"][0], args.cores, around["write_bandwidth"], args.shards)
    return {
        "machine": machine(),
        "setup": {"images": n, "size": [args.height, args.width], "cores": args.cores, "rounds": args.rounds, "shards": args.shards},
        "contenders": rows,
        "pipeline_time_split": time_split,
        "shm_by_shard_count": shm_check,
        "workers_sweep": sweep,
        "scale": scale,
        "reducing_gap": gaps,
        "overhead": around,
        "reading": read,
        "targets": [{"target": t, "bound": b, "measured": m, "met": bool(ok)} for t, b, m, ok in targets],
    }


def write_outputs(results: dict, out: Path) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(markdown(results))
    charts(results, out)
    print(markdown(results))


def markdown(r: dict) -> str:
    m, s = r["machine"], r["setup"]
    lines = [
        f"Measured {m['date']} on {m['cpu']} ({m['logical_cores']} logical / {m['physical_cores']} physical cores,"
        f" {m['memory_gb']} GiB), Python {m['python']}, OpenCV {m['opencv']}: {s['images']} images of"
        f" {s['size'][0]}x{s['size'][1]}, --cores {s['cores']}, {s['shards']} shards, median of {s['rounds']} rounds.",
        "",
        "| contender | seconds | images/s | speed-up over serial | share of the limit | peak RSS, largest process (MB) | peak /dev/shm (MB) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in r["contenders"].items():
        lines.append(
            f"| {name} | {row['seconds']:.2f} | {row['images_per_s']:.1f} | {row['speedup_over_serial']:.2f}x"
            f" | {row['share_of_limit']:.0%} | {row['peak_rss_mb']:.0f} | {row['peak_shm_mb']:.0f} |"
        )
    split = r["pipeline_time_split"]
    lines += ["", "Where a fresh pipeline build's seconds go (median; summed over shard jobs, which run side by side, so the sum can exceed the wall time):", ""]
    lines += ["| job start-up (python, imports) | waiting for decode (incl. worker start) | HDF5 write | wall time of the build |", "|---:|---:|---:|---:|"]
    wall = split.get("wall", split["startup"] + split["decode_wait"] + split["write"] + split.get("snakemake_and_gather", 0.0))
    lines.append(f"| {split['startup']:.2f} | {split['decode_wait']:.2f} | {split['write']:.2f} | {wall:.2f} |")
    lines += ["", "| shards | images per shard | peak /dev/shm (MB) |", "|---:|---:|---:|"]
    lines += [f"| {k} | {v['images_per_shard']} | {v['peak_shm_mb']:.0f} |" for k, v in r["shm_by_shard_count"].items()]
    lines += ["", "| workers | seconds | images/s |", "|---:|---:|---:|"]
    lines += [f"| {w['workers']} | {w['seconds']:.2f} | {w['images_per_s']:.1f} |" for w in r["workers_sweep"]]
    if r.get("scale"):
        lines += ["", "Scale: tiny 16x16 JPEGs in class folders of 1,000 (decoding costs almost nothing; every second is overhead);"
                  " seconds, and Snakemake's own peak RSS in MB:", ""]
        lines += ["| images | shards | generate | dry run | build | ms/image | no-op | one changed (shard jobs) | Snakemake RSS: dry run / build / no-op |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for x in r["scale"]:
            gen = f"{x['generate_seconds']:.0f}" if x["generate_seconds"] else "(kept)"
            lines.append(
                f"| {x['images']:,} | {x['shards']} | {gen} | {x['dry_run_seconds']:.2f} | {x['build_seconds']:.1f} | {x['build_ms_per_image']:.2f}"
                f" | {x['noop_seconds']:.2f} | {x['one_changed_seconds']:.2f} ({x['one_changed_shard_jobs']})"
                f" | {x['dry_run_snakemake_rss_mb']:.0f} / {x['build_snakemake_rss_mb']:.0f} / {x['noop_snakemake_rss_mb']:.0f} |"
            )
    if r.get("reducing_gap"):
        g = r["reducing_gap"]
        lines += ["", f"reducing_gap: {g['photos']} photograph-like JPEGs (1920x1080 to 5640x3172) to {g['photo_target'][0]}x{g['photo_target'][1]},"
                  f" {g['clouds']} Clouds JPEGs to {g['clouds_target'][0]}x{g['clouds_target'][1]}; one process, decode into a preallocated row:", ""]
        lines += ["| reducing_gap | photos: ms/image | photos: grey levels from a full decode, mean / max | Clouds: ms/image |", "|---|---:|---:|---:|"]
        for key, v in g["gaps"].items():
            p, c = v["photos"], v["clouds"]
            lines.append(f"| {key} | {p['ms_per_image']:.1f} | {p['mean_grey_levels']:.2f} / {p['max_grey_levels']:.2f} | {c['ms_per_image']:.1f} |")
    lines += overhead_markdown(r.get("overhead") or {})
    lines += reading.markdown(r.get("reading") or {})
    lines += ["", "| target | bound | measured | met |", "|---|---|---:|---|"]
    lines += [f"| {t['target']} | {t['bound']} | {t['measured']} | {'yes' if t['met'] else '**no**'} |" for t in r["targets"]]
    return "\n".join(lines) + "\n"


def overhead_markdown(o: dict) -> list[str]:
    lines = []
    if o.get("resized"):
        lines += ["", "Resized builds (Clouds-size JPEGs to 350x525, default config); seconds:", ""]
        lines += ["| images | pipeline | serial loop | decode limit | pipeline / limit | limit with imread | pipeline / that | speed-up over serial | pipeline, `reducing_gap: 1.0` | that / limit |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        lines += [
            f"| {x['images']:,} | {x['pipeline']:.2f} | {x['serial']:.2f} | {x['limit']:.2f} | {x['pipeline_over_limit']:.2f}x"
            + (f" | {x['limit_imread']:.2f} | {x['pipeline_over_limit_imread']:.2f}x" if "limit_imread" in x else " | |")
            + f" | {x['speedup_over_serial']:.2f}x"
            + (f" | {x['pipeline_gap_1']:.2f} | {x['gap_1_over_limit']:.2f}x |" if "pipeline_gap_1" in x else " | | |")
            for x in o["resized"]
        ]
        lines += ["", "The default `reducing_gap: 2.0` decodes these images at 1/2; the limit, and `reducing_gap: 1.0`, at 1/4."
                  " The limit decodes JPEGs with simplejpeg as the pipeline does; the limit with imread decodes every file with cv2.imread instead."]
    if o.get("photos"):
        p = o["photos"]
        lines += ["", f"Mixed large photographs ({p['images']}: JPEG 1920x1080 to 5120x2880, RGBA PNG, 4096x4096 WebP) to 384x512:"
                  f" pipeline {p['pipeline']:.2f} s, serial loop {p['serial']:.2f} s, {p['speedup_over_serial']:.2f}x."
                  f" The pipeline's rows, in grey levels from INTER_AREA on a full decode (mean absolute difference; by format, then the worst image): {p['grey_levels']}."]
    if o.get("reruns"):
        lines += ["", "Reruns (seconds; ratios to the no-op rerun):", ""]
        lines += ["| images | config | build | no-op | one changed | one added | one removed |", "|---:|---|---:|---:|---:|---:|---:|"]
        for x in o["reruns"]:
            cfg = ", ".join(f"{k}={v}" for k, v in x["config"].items()) or "default (full size)"
            lines.append(
                f"| {x['images']:,} | {cfg} | {x['build']:.1f} | {x['noop']:.2f} | {x['changed']:.2f} ({x['changed_over_noop']:.2f}x)"
                f" | {x['added']:.2f} ({x['added_over_noop']:.2f}x) | {x['removed']:.2f} ({x['removed_over_noop']:.2f}x) |"
            )
    if o.get("write_bandwidth"):
        w = o["write_bandwidth"]
        phase = f"{w['shard_write_phase_gb_s']} GB/s" if w["shard_write_phase_gb_s"] else "n/a"
        lines += ["", f"Full-size write: {w['bytes'] / 1e9:.2f} GB. A plain file write of the same bytes: {w['plain_write_gb_s']} GB/s;"
                  f" the pipeline end to end: {w['pipeline_end_to_end_gb_s']} GB/s; one shard job's write phase: {phase}."]
    if o.get("estimate"):
        e = o["estimate"]
        lines += ["", f"Estimate from these figures: a resized build of {e['images']:,} Clouds images. Per image, the largest resized build cost"
                  f" {e['per_image_core_ms']} ms of core time beyond a no-op run (the decode limit: {e['limit_per_image_core_ms']} ms); fixed:"
                  f" {e['fixed_s']} s; writing: a plain write reached {e['disk_gb_s']} GB/s, the shard jobs' writers {e['writers_gb_s']} GB/s together. Seconds:", ""]
        lines += ["| cores | work (per image x images / cores) | write | total | bound by |", "|---:|---:|---:|---:|---|"]
        lines += [f"| {x['cores']} | {x['work_s']} | {x['write_s']} | {x['total_s']} | {x['bound']} |" for x in e["rows"]]
    return lines  # fmt: skip


def charts(r: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Seconds, not images/s: the incremental run rebuilds one image's shard, not the dataset.
    names = list(r["contenders"])
    seconds = [r["contenders"][k]["seconds"] for k in names]
    labels = {"incremental": "incremental\n(1 changed)", "limit": "limit\n(decode / cores)"}
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    bars = ax.bar([labels.get(k, k) for k in names], seconds, color=["#999999", "#6f9fd8", "#2b6cb0", "#7fb77e", "#d98c5f"])
    ax.bar_label(bars, labels=[f"{v:.1f} s" for v in seconds])
    ax.set_ylabel("seconds (lower is better)")
    ax.margins(y=0.12)
    ax.set_title(f"{r['setup']['images']} images of {r['setup']['size'][0]}x{r['setup']['size'][1]}, --cores {r['setup']['cores']}")
    fig.tight_layout()
    fig.savefig(out / "speed.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.4))
    sweep = r["workers_sweep"]
    ax.plot([w["workers"] for w in sweep], [w["images_per_s"] for w in sweep], marker="o")
    ax.set_xlabel(f"workers per shard job (--cores {r['setup']['cores']})")
    ax.set_ylabel("images/s")
    ax.set_ylim(bottom=0)
    ax.set_xticks([w["workers"] for w in sweep])
    ax.set_title("pipeline throughput against workers")
    fig.tight_layout()
    fig.savefig(out / "workers.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
