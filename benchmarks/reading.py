"""Reading a built dataset every epoch: each reader's images/s over shuffled epochs, against the stored bytes' limit.

Two sets, as a training job reads them: 4,096 JPEGs of 300x400 resized to
224x224 (0.15 MB a row), and the 512 Clouds JPEGs resized to 350x525 (0.55 MB
a row), each built with both gather modes. Every reader runs in a process of
its own (benchmarks/readers.py), page cache warm, batch 64, 2 workers where it
has workers; rounds rotate the order and the table takes medians. Also: a
dataset stored with each compression (its bytes, warm and cold, against the
decode limit), the segmentation feed (the Clouds set alone and with its
masks), each set bigger than memory (its file dropped from the page
cache before each epoch: in order, shuffled, in block order, against the file
read in order, and how well mixed the batches are), and the time a reader
takes to open a dataset of a million rows.

Called by bench.main, or alone: python -m benchmarks.reading [--rounds 3].
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np

from .common import REPO, fresh, generate, pipeline, say

SMALL = (224, 224)  # from JPEGs of SMALL_SOURCE
SMALL_SOURCE = (300, 400)
CLOUDS = (350, 525)  # from the benchmark's full-size Clouds set
DATASET_READERS = ["pread_limit", "loader", "batches", "dataloader", "dataloader_default_collate"]


SECONDS = [1.0]  # each reader is timed over whole epochs until this many seconds have passed


def reader(name: str, target: Path, *extra: str) -> float:
    """Images/s of one reader, in a process of its own."""
    cmd = [sys.executable, "-m", "benchmarks.readers", name, str(target), "--seconds", str(SECONDS[0]), *extra]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"reader {name} on {target} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["images_per_s"]


def _size_of(jpeg: Path) -> tuple[int, int]:
    from imgshard.plan.probe import header_size

    return header_size(str(jpeg))


def build(source: Path, work: Path, size: tuple[int, int], cores: int, **config) -> Path:
    fresh(work)
    pipeline(source, work, cores, image_size=f"[{size[0]},{size[1]}]", **config)
    return work / "results/dataset.h5"


def chunked_copy(dataset: Path, out: Path) -> Path:
    """The same pixels, one chunk per row, for the limit (read_direct_chunk of each row's chunk)."""
    with h5py.File(dataset) as src, h5py.File(out, "w") as dst:
        images = src["images"]
        target = dst.create_dataset("images", images.shape, np.uint8, chunks=(1, *images.shape[1:]))
        for start in range(0, images.shape[0], 64):
            target[start : start + 64] = images[start : start + 64]
    return out


def _litdata_row(args):
    path, i = args
    with h5py.File(path) as f:
        return {"image": f["images"][i]}


def litdata_copy(dataset: Path, out: Path) -> Path:
    """LitData's own format of the same decoded arrays (``litdata.optimize``)."""
    import litdata

    with h5py.File(dataset) as f:
        n = f["images"].shape[0]
    shutil.rmtree(out, ignore_errors=True)
    litdata.optimize(fn=_litdata_row, inputs=[(str(dataset), i) for i in range(n)], output_dir=str(out), chunk_bytes="64MB", num_workers=2, mode="overwrite")
    return out


def one_set(data: Path, name: str, images: Path, size: tuple[int, int], cores: int, rounds: int) -> dict:
    count = len(list(images.glob("*.jpg")))
    height, width = _size_of(next(images.glob("*.jpg")))
    built = {mode: build(images, data / f"read-{name}-{mode}", size, cores, gather=mode) for mode in ("copy", "virtual")}
    limit_file = chunked_copy(built["copy"], data / f"read-{name}-limit.h5")
    lit = litdata_copy(built["copy"], data / f"read-{name}-litdata")
    runs: dict[str, list[float]] = {}
    units = [("limit", limit_file, ())]
    units += [(f"{r}/{mode}", built[mode], ()) for r in DATASET_READERS for mode in built]
    units += [("jpeg_folder", images, ("--size", f"{size[0]},{size[1]}")), ("litdata", lit, ())]
    for r in range(rounds):
        for label, target, extra in units[r % len(units) :] + units[: r % len(units)]:
            runs.setdefault(label, []).append(reader(label.split("/")[0], target, *extra))
    rates = {label: round(statistics.median(v), 1) for label, v in runs.items()}
    out = {"set": name, "images": count, "source": [height, width], "size": list(size), "row_mb": round(size[0] * size[1] * 3 / 1e6, 3)}
    out["images_per_s"] = rates
    out["share_of_limit"] = {label: round(v / rates["limit"], 2) for label, v in rates.items()}
    say(f"reading {name}: {rates}")
    return out


CODECS = ("none", "lzf", "gzip", "lz4", "zstd")


def codecs(data: Path, images: Path, cores: int, rounds: int) -> dict:
    """The 224x224 set stored with each ``compression`` (copy): its bytes; the Loader and the DataLoader
    (2 workers) warm, the Loader with the file dropped from the page cache; and the decode limit (2
    threads reading each row's stored bytes at its offset and decoding them into a batch buffer)."""
    name = "x".join(map(str, SMALL))
    plain = data / f"read-{name}-copy/results/dataset.h5"  # one_set's
    built = {"none": plain if plain.exists() else build(images, data / f"read-{name}-copy", SMALL, cores, gather="copy")}
    built |= {c: build(images, data / f"read-{name}-{c}", SMALL, cores, gather="copy", compression=c) for c in CODECS[1:]}
    units = [("limit", "decode_limit", ("--threads", "2")), ("loader", "loader", ()), ("dataloader", "dataloader", ()), ("loader_cold", "loader", ("--cold",))]
    runs: dict[str, list[float]] = {}
    for r in range(rounds):
        for c, path in built.items():
            for label, kind, extra in units[r % len(units) :] + units[: r % len(units)]:
                runs.setdefault(f"{c}/{label}", []).append(reader(kind, path, *extra))
    rates = {k: round(statistics.median(v), 1) for k, v in runs.items()}
    out = {"bytes": {c: path.stat().st_size for c, path in built.items()}, "images_per_s": rates}
    out["share_of_limit"] = {c: {u: round(rates[f"{c}/{u}"] / rates[f"{c}/limit"], 2) for u in ("loader", "dataloader")} for c in built}
    say(f"codecs: {out}")
    for c in CODECS[1:]:
        shutil.rmtree(data / f"read-{name}-{c}", ignore_errors=True)
    return out


def segmentation(data: Path, clouds: Path, cores: int, rounds: int) -> dict:
    """The Clouds set at 350x525 without labels and with its four masks (a train.csv of boxes, as make
    run's demo writes): the Loader's and the DataLoader's (2 workers) images/s, copy and virtual, and the bytes."""
    from imgshard.tools.demo import write_labels

    name = "x".join(map(str, CLOUDS))
    jpegs = sorted(clouds.glob("*.jpg"))
    csv = data / "clouds-train.csv"
    write_labels(str(csv), [p.name for p in jpegs], *_size_of(jpegs[0]))
    built = {}
    for mode in ("copy", "virtual"):
        alone = data / f"read-{name}-{mode}/results/dataset.h5"
        built[f"alone/{mode}"] = alone if alone.exists() else build(clouds, data / f"read-{name}-{mode}", CLOUDS, cores, gather=mode)
        built[f"masks/{mode}"] = build(clouds, data / f"read-{name}-masks-{mode}", CLOUDS, cores, gather=mode, labels=csv)
    units = [(f"{kind}/{what}", kind, path) for what, path in built.items() for kind in ("loader", "dataloader")]
    runs: dict[str, list[float]] = {}
    for r in range(rounds):
        for label, kind, path in units[r % len(units) :] + units[: r % len(units)]:
            runs.setdefault(label, []).append(reader(kind, path))
    rates = {k: round(statistics.median(v), 1) for k, v in runs.items()}
    out = {"set": name, "images": len(jpegs), "images_per_s": rates}
    out["masks_over_alone"] = {f"{kind}/{mode}": round(rates[f"{kind}/masks/{mode}"] / rates[f"{kind}/alone/{mode}"], 3) for kind in ("loader", "dataloader") for mode in ("copy", "virtual")}
    out["bytes"] = {w: built[f"{w}/copy"].stat().st_size for w in ("alone", "masks")}
    out["bytes_ratio"] = round(out["bytes"]["masks"] / out["bytes"]["alone"], 3)
    say(f"segmentation: {out}")
    for mode in ("copy", "virtual"):
        shutil.rmtree(data / f"read-{name}-masks-{mode}", ignore_errors=True)
    return out


def bigger_than_memory(data: Path, rounds: int, name: str) -> dict:
    """One epoch each with the dataset's files dropped from the page cache (the copy of set ``name``): the
    file read in order (the disk's limit), the Loader in stored order, shuffled, in block order; the
    DataLoader shuffled and with BlockSampler; how well mixed the batches are; and both orders warm."""
    path = data / f"read-{name}-copy/results/dataset.h5"
    units = [(f"file_read_{t}", "file_read", ("--threads", str(t))) for t in (1, 2, 4)]
    units += [
        ("loader_in_order", "loader", ("--shuffle", "false")),
        ("loader_shuffled", "loader", ("--shuffle", "true")),
        ("block_read_4", "block_read", ("--threads", "4")),
        ("loader_block_1mib", "loader", ("--shuffle", "block", "--block-bytes", str(1 << 20))),
        ("loader_block_4mib", "loader", ("--shuffle", "block", "--block-bytes", str(4 << 20))),
        ("dataloader_shuffled", "dataloader", ("--shuffle", "true")),
        ("dataloader_block", "dataloader", ("--shuffle", "block")),
    ]
    runs: dict[str, list[float]] = {}
    for r in range(rounds):
        for label, kind, extra in units[r % len(units) :] + units[: r % len(units)]:
            runs.setdefault(label, []).append(reader(kind, path, "--cold", *extra))
        for label, order in (("warm_shuffled", "true"), ("warm_block", "block")):
            runs.setdefault(label, []).append(reader("loader", path, "--shuffle", order))
    rates = {label: round(statistics.median(v), 1) for label, v in runs.items()}
    sequential = max(rates[k] for k in ("file_read_1", "file_read_2", "file_read_4", "loader_in_order"))
    with h5py.File(path) as f:
        rows, row_mb = f["images"].shape[0], int(np.prod(f["images"].shape[1:])) / 1e6
    out = {"set": name, "rows": rows, "row_mb": round(row_mb, 3), "images_per_s": rates, "sequential_limit": sequential}
    out["share_of_sequential"] = {k: round(v / sequential, 2) for k, v in rates.items() if not k.startswith("warm")}
    out["warm_block_over_shuffled"] = round(rates["warm_block"] / rates["warm_shuffled"], 2)
    out["mixing"] = mixing(path)
    say(f"bigger than memory, {name}: {out}")
    return out


def mixing(path: Path, batch: int = 64) -> dict:
    """Mean distinct labels and distinct 64-row runs of the stored order in a batch of ``batch``, over one
    epoch, for the full shuffle and the block order, on the rows of ``path`` labelled as an ImageFolder
    set is stored: classes of 128 rows, each one contiguous run."""
    from imgshard import Loader

    out = {}
    for label, order in (("shuffled", True), ("block", "block")):
        with Loader(path, batch_size=batch, shuffle=order, seed=0) as loader:
            every = loader._batches()
            batches = [b for b in every if len(b) == batch] or every  # a set smaller than a batch: its one batch
        out[label] = {
            "labels": round(float(np.mean([len(set((b // 128).tolist())) for b in batches])), 2),
            "runs": round(float(np.mean([len(set((b // 64).tolist())) for b in batches])), 2),
        }
    out["labels_ratio"] = round(out["block"]["labels"] / out["shuffled"]["labels"], 2)
    out["runs_ratio"] = round(out["block"]["runs"] / out["shuffled"]["runs"], 2)
    return out


def million(data: Path, rows: int, parts: int) -> dict:
    """Open a dataset of ``rows`` rows (8x8 pixels: opening does not depend on their size), virtual over
    ``parts`` part files and copied: gather, then a Loader's and an H5ImageDataset's open, each in a new process."""
    from imgshard.build.index import ShardIndex, write_index
    from imgshard.publish.snapshots import gather_and_publish
    from imgshard.build.part import PartWriter

    root = fresh(data / f"open-{rows}")
    shards_dir = root / "results/dataset.shards"
    shards_dir.mkdir(parents=True)
    per = rows // parts
    pixels = np.random.default_rng(0).integers(0, 256, (per, 8, 8, 3), dtype=np.uint8)
    indexes = []
    for k in range(parts):
        writer = PartWriter(str(shards_dir), f"{k:04d}", per, (8, 8), "none")
        writer.write(pixels, [(i, i) for i in range(per)])
        writer.finish()
        index = ShardIndex(
            paths=[f"c{k:04d}/{i:07d}.jpg" for i in range(per)], sha256=["0" * 64] * per, sizes=np.full((per, 2), 8, np.int32),
            parts=[writer.name], part_rows=[per], part=np.zeros(per, np.int32), row=np.arange(per, dtype=np.int64),
        )  # fmt: skip
        indexes.append(str(shards_dir / f"shard-{k:04d}.h5"))
        write_index(indexes[-1], index)
    out = {"rows": rows, "parts": parts}
    for mode in ("virtual", "copy"):
        path = root / f"results/{mode}.h5"
        started = time.perf_counter()
        gather_and_publish(indexes, str(path), (8, 8), mode=mode)
        out[f"gather_{mode}_s"] = round(time.perf_counter() - started, 2)
        for kind, code in (("loader", "Loader(path, batch_size=64)"), ("dataset", "H5ImageDataset(path)")):
            timer = f"import sys, time; from imgshard import Loader, H5ImageDataset; path = sys.argv[1]; t = time.perf_counter(); {code}; print(time.perf_counter() - t)"
            seconds = [float(subprocess.run([sys.executable, "-c", timer, str(path)], cwd=REPO, capture_output=True, text=True, check=True).stdout) for _ in range(3)]
            out[f"open_{kind}_{mode}_s"] = round(statistics.median(seconds), 2)
    say(f"open at {rows:,} rows: {out}")
    shutil.rmtree(root, ignore_errors=True)
    return out


def targets(r: dict) -> list[tuple]:
    out = []
    for s in r.get("sets", []):
        share = s["share_of_limit"]
        for mode in ("copy", "virtual"):
            v = share[f"loader/{mode}"]
            out.append((f"reading {s['set']}: Loader ({mode}) at least 0.8x the limit", ">= 0.8", v, v >= 0.8))
        for mode in ("copy", "virtual"):
            v = share[f"dataloader/{mode}"]
            out.append((f"reading {s['set']}: DataLoader(H5ImageDataset), 2 workers ({mode}) at least 0.15x the limit", ">= 0.15", v, v >= 0.15))
    g = r.get("segmentation")
    if g:
        for key, v in g["masks_over_alone"].items():
            kind, mode = key.split("/")
            who = "Loader" if kind == "loader" else "DataLoader(H5ImageDataset), 2 workers,"
            out.append((f"segmentation {g['set']}: {who} with masks at least 0.3x its images alone ({mode})", ">= 0.3", v, v >= 0.3))
        out.append((f"segmentation {g['set']}: the dataset with masks at most 1.5x the bytes without", "<= 1.5", g["bytes_ratio"], g["bytes_ratio"] <= 1.5))
    c = r.get("codecs")
    if c:
        for codec, shares in c["share_of_limit"].items():
            for kind, v in shares.items():
                who = "Loader" if kind == "loader" else "DataLoader(H5ImageDataset), 2 workers,"
                out.append((f"compression {codec}: {who} at least 0.7x the decode limit (224x224, copy)", ">= 0.7", v, v >= 0.7))
    for k in r.get("bigger_than_memory", []):
        v = k["share_of_sequential"]["loader_block_4mib"]
        out.append((f"bigger than memory, {k['set']}: Loader(shuffle=\"block\") at least 0.9x the sequential read", ">= 0.9", v, v >= 0.9))
        v = k["warm_block_over_shuffled"]
        out.append((f"bigger than memory, {k['set']}: block order warm at least 0.9x shuffle=True", ">= 0.9", v, v >= 0.9))
        m = k["mixing"]
        out.append((f"{k['set']}: block order's distinct labels a batch at least 0.95x the full shuffle's", ">= 0.95", m["labels_ratio"], m["labels_ratio"] >= 0.95))
        out.append((f"{k['set']}: block order's distinct 64-row runs a batch at least 0.75x the full shuffle's", ">= 0.75", m["runs_ratio"], m["runs_ratio"] >= 0.75))
    if r.get("open"):
        o = r["open"]
        worst = max(o[f"open_loader_{m}_s"] for m in ("virtual", "copy"))
        out.append((f"a Loader on {o['rows']:,} rows opens in a few seconds (virtual over {o['parts']} parts, and copy)", "<= 5 s", worst, worst <= 5))
    return out  # fmt: skip


def run(
    data: Path, clouds: Path, cores: int, rounds: int, small_count: int = 4096, open_rows: int = 1_000_000,
    open_parts: int = 1000, seconds: float = 1.0, clouds_set: bool = True,
) -> dict:  # fmt: skip
    """``clouds``: the benchmark's full-size Clouds JPEGs, read at 350x525 (``clouds_set``); the 224x224 set is
    ``small_count`` JPEGs of 300x400. ``seconds``: how long each reader is timed at least (0: one epoch)."""
    SECONDS[0] = seconds
    small = generate(data / f"full-{small_count}-{SMALL_SOURCE[0]}x{SMALL_SOURCE[1]}", small_count, *SMALL_SOURCE, cores)
    sets = [("x".join(map(str, SMALL)), small, SMALL)] + ([("x".join(map(str, CLOUDS)), clouds, CLOUDS)] if clouds_set else [])
    out = {"sets": [one_set(data, name, images, size, cores, rounds) for name, images, size in sets]}
    out["codecs"] = codecs(data, small, cores, rounds)
    out["segmentation"] = segmentation(data, clouds, cores, rounds)
    out["bigger_than_memory"] = [bigger_than_memory(data, rounds, name) for name, _, _ in sets]
    if open_rows:
        out["open"] = million(data, open_rows, min(open_parts, open_rows))
    for name, _, _ in sets:
        for kind in ("copy", "virtual", "none"):
            shutil.rmtree(data / f"read-{name}-{kind}", ignore_errors=True)
        shutil.rmtree(data / f"read-{name}-litdata", ignore_errors=True)
        (data / f"read-{name}-limit.h5").unlink(missing_ok=True)
    return out


BIGGER_LABELS = {
    "file_read_1": "the file read in order, 8 MiB pieces, 1 thread",
    "file_read_2": "the same, 2 threads",
    "file_read_4": "the same, 4 threads",
    "loader_in_order": "`Loader(shuffle=False)`",
    "loader_shuffled": "`Loader(shuffle=True)`",
    "block_read_4": "the block order's own limit: its 4 MiB blocks read whole, in its order, 4 threads",
    "loader_block_1mib": "`Loader(shuffle=\"block\", block_bytes=1 MiB)`",
    "loader_block_4mib": "`Loader(shuffle=\"block\")` (4 MiB blocks, the default)",
    "dataloader_shuffled": "`DataLoader(H5ImageDataset, shuffle=True)`, 2 workers",
    "dataloader_block": "`DataLoader(H5ImageDataset, sampler=BlockSampler)`, 2 workers",
}

LABELS = {
    "limit": "limit: `read_direct_chunk` of each row's chunk, one process",
    "pread_limit": "one `preadv` per row at its offset, one thread",
    "loader": "`imgshard.Loader`",
    "batches": "`imgshard.batches(shuffle=True)`",
    "dataloader": "`DataLoader(H5ImageDataset, collate_fn=imgshard.collate)`, 2 workers",
    "dataloader_default_collate": "the same with torch's default collate",
    "jpeg_folder": "DataLoader decoding the JPEG folder, 2 workers",
    "litdata": "LitData `StreamingDataLoader`, 2 workers",
}


def markdown(r: dict) -> list[str]:
    if not r.get("sets"):
        return []
    sets = r["sets"]
    lines = ["", "Reading a built dataset: images/s over shuffled epochs, page cache warm, batch 64 (share of the limit); copy / virtual:", ""]
    lines += ["| reader | " + " | ".join(f"{s['set']} ({s['images']:,} images, {s['row_mb']} MB a row)" for s in sets) + " |"]
    lines += ["|---|" + "---:|" * len(sets)]
    for key, label in LABELS.items():
        cells = []
        for s in sets:
            rate, share = s["images_per_s"], s["share_of_limit"]
            if key in rate:
                cells.append(f"{rate[key]:,.0f} ({share[key]:.2f}x)")
            else:
                cells.append(" / ".join(f"{rate[f'{key}/{m}']:,.0f} ({share[f'{key}/{m}']:.2f}x)" for m in ("copy", "virtual")))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    g = r.get("segmentation")
    if g:
        rate, share = g["images_per_s"], g["masks_over_alone"]
        lines += ["", f"The segmentation feed: the {g['set']} set ({g['images']} images) alone and with its four masks, images/s, page cache warm, batch 64;"
                  f" copy / virtual. The dataset with masks holds {g['bytes_ratio']:.2f}x the bytes of the images alone"
                  f" ({g['bytes']['masks'] / 1e6:,.0f} MB, {g['bytes']['alone'] / 1e6:,.0f} MB).", ""]
        lines += ["| reader | images alone | with masks | with masks / alone |", "|---|---:|---:|---:|"]
        for kind, label in (("loader", "`imgshard.Loader`"), ("dataloader", "`DataLoader(H5ImageDataset, collate_fn=imgshard.collate)`, 2 workers")):
            cells = [" / ".join(f"{rate[f'{kind}/{w}/{m}']:,.0f}" for m in ("copy", "virtual")) for w in ("alone", "masks")]
            lines.append(f"| {label} | {cells[0]} | {cells[1]} | " + " / ".join(f"{share[f'{kind}/{m}']:.2f}x" for m in ("copy", "virtual")) + " |")
    c = r.get("codecs")
    if c:
        rate, share = c["images_per_s"], c["share_of_limit"]
        lines += ["", "By `compression`: the 224x224 set (copy), images/s, batch 64; the decode limit is 2 threads reading each row's stored bytes"
                  " at its offset and decoding them into a batch buffer; cold: the file dropped from the page cache before the epoch.", ""]
        lines += ["| compression | MB | decode limit | `Loader` warm (share of limit) | `DataLoader`, 2 workers, warm (share) | `Loader` cold |", "|---|---:|---:|---:|---:|---:|"]
        for codec in c["bytes"]:
            lines.append(f"| {codec} | {c['bytes'][codec] / 1e6:,.0f} | {rate[f'{codec}/limit']:,.0f} | {rate[f'{codec}/loader']:,.0f} ({share[codec]['loader']:.2f}x)"
                         f" | {rate[f'{codec}/dataloader']:,.0f} ({share[codec]['dataloader']:.2f}x) | {rate[f'{codec}/loader_cold']:,.0f} |")
    for k in r.get("bigger_than_memory", []):
        rate, share, m = k["images_per_s"], k["share_of_sequential"], k["mixing"]
        lines += ["", f"Bigger than memory: one epoch of the {k['set']} set (copy, {k['rows']:,} rows of {k['row_mb']} MB) with its file dropped from the page cache"
                  " (`posix_fadvise(DONTNEED)`) before each; images/s (share of the sequential limit, the best of the first four lines):", ""]
        lines += ["| reader | images/s | share |", "|---|---:|---:|"]
        for key, label in BIGGER_LABELS.items():
            lines.append(f"| {label} | {rate[key]:,.0f} | {share[key]:.2f}x |")
        lines += ["", f"Page cache warm: block order {rate['warm_block']:,.0f} images/s, full shuffle {rate['warm_shuffled']:,.0f} ({k['warm_block_over_shuffled']}x)."
                  f" Mixing, batches of 64 over classes of 128 contiguous rows (an ImageFolder set as stored): distinct labels a batch {m['block']['labels']} in block order,"
                  f" {m['shuffled']['labels']} shuffled ({m['labels_ratio']}x); distinct 64-row runs {m['block']['runs']} and {m['shuffled']['runs']} ({m['runs_ratio']}x)."]
    o = r.get("open")
    if o:
        lines += ["", f"Opening {o['rows']:,} rows (virtual over {o['parts']} part files / copy), seconds in a new process: Loader {o['open_loader_virtual_s']} / {o['open_loader_copy_s']},"
                  f" H5ImageDataset {o['open_dataset_virtual_s']} / {o['open_dataset_copy_s']}; the gather that wrote them {o['gather_virtual_s']} / {o['gather_copy_s']}."]
    return lines  # fmt: skip


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--data", default=str(REPO / "benchmarks/.data"))
    p.add_argument("--open-rows", type=int, default=1_000_000)
    p.add_argument("--clouds", default=str(REPO / "benchmarks/.data/full-512-1400x2100"), help="the full-size Clouds set (make bench makes it)")
    args = p.parse_args(argv)
    result = run(Path(args.data), Path(args.clouds), args.cores, args.rounds, open_rows=args.open_rows)
    print("\n".join(markdown(result)))
    return result


if __name__ == "__main__":
    main()
