"""What `snakemake --report` shows: a contact sheet of stored images, per-shard throughput, the stats table."""

from __future__ import annotations

import csv
import json

import cv2
import matplotlib
import numpy as np

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402

from ..read import H5ImageDataset  # noqa: E402

# One colour per mask class (RGB), as distinct as a small palette gets.
PALETTE = [(255, 64, 64), (64, 200, 64), (255, 200, 0), (200, 64, 255), (0, 200, 255), (255, 128, 0)]


def contact_sheet(dataset: str, out_png: str, count: int = 12, columns: int = 4, seed: int = 0) -> list[str]:
    """A grid of ``count`` images drawn at random, titled with their paths, masks outlined; returns the paths."""
    ds = H5ImageDataset(dataset)
    picks = sorted(np.random.default_rng(seed).choice(len(ds), size=min(count, len(ds)), replace=False))
    return draw_sheet(ds, [int(i) for i in picks], out_png, f"{len(picks)} of {len(ds)} stored images, drawn at random", columns)


def draw_sheet(ds: H5ImageDataset, indices: list[int], out_png: str, title: str, columns: int = 4) -> list[str]:
    """The images ``indices`` of ``ds`` in a grid, titled with their paths, masks outlined; returns the paths."""
    columns = max(1, min(columns, len(indices)))
    rows = max(1, -(-len(indices) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3.1 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, indices):
        item = ds[i]
        image, mask = (item if ds.target == "masks" else (item[0] if ds.target else item, None))
        ax.imshow(outlined(image, mask))
        label = f" ({ds.classes[item[1]]})" if ds.target == "labels" else ""
        ax.set_title(f"{i}: {ds.path_of(i)}{label}", fontsize=8)
    if ds.target == "masks":
        handles = [plt.Line2D([], [], color=np.array(PALETTE[k % len(PALETTE)]) / 255, lw=3) for k in range(len(ds.classes))]
        fig.legend(handles, ds.classes, loc="lower center", ncol=len(ds.classes), frameon=False)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    fig.savefig(out_png, dpi=80)
    plt.close(fig)
    return [ds.path_of(i) for i in indices]


def outlined(image: np.ndarray, mask: np.ndarray | None, width: int = 480) -> np.ndarray:
    """A thumbnail of ``image`` with each mask class's outline drawn in its colour."""
    scale = width / image.shape[1]
    size = (width, max(1, round(image.shape[0] * scale)))
    thumb = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    if mask is not None:
        for k in range(mask.shape[-1]):
            small = cv2.resize(mask[..., k], size, interpolation=cv2.INTER_NEAREST)
            contours, _ = cv2.findContours(small, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(thumb, contours, -1, PALETTE[k % len(PALETTE)], 3)
    return thumb


def throughput_chart(stats_json: str, out_png: str) -> None:
    with open(stats_json) as f:
        shards = json.load(f)["shards"]
    fig, ax = plt.subplots(figsize=(max(5, 0.45 * len(shards)), 3.2))
    ax.bar([s["shard"] for s in shards], [s["images_per_s"] for s in shards], color="#2b6cb0")
    ax.set_xlabel("shard")
    ax.set_ylabel("images/s")
    ax.set_title("decode and write throughput per shard job")
    fig.tight_layout()
    fig.savefig(out_png, dpi=100)
    plt.close(fig)


def stats_table(stats_json: str, out_csv: str) -> None:
    with open(stats_json) as f:
        shards = json.load(f)["shards"]
    columns = ["shard", "images", "skipped", "seconds", "images_per_s", "source_bytes", "shard_bytes"]
    with open(out_csv, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for s in shards:
            writer.writerow([s[c] for c in columns])
