"""The plan of a whole run, made when the workflow is parsed: which datasets it builds, their images, labels, size and shards.

A run builds one dataset (``images_dir`` and ``output`` at the top of the
config) or several (a ``datasets:`` mapping, e.g. ``train`` and ``test``). Each
dataset of the mapping takes the top-level pixel settings unless it sets its
own, and is written to ``<results_dir>/<name>.h5`` with its own shard folder,
stats and report figures, so datasets of one run never overwrite each other.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from . import manifest
from ..codecs import mask_bytes
from ..layout import Layout
from .discover import find_images
from ..errors import ImgshardError
from .labels import FOLDERS, Labels, align, align_folders, folder_classes, folder_labels, read_labels
from .probe import CommonSize
from .shard import assign, shard_name
from ..temp import remove_stale_temps

# What only the single-dataset form sets at the top level; a dataset of the mapping sets its own.
SINGLE_KEYS = ("images_dir", "image_list", "labels", "output")
# Keys that describe the run, not a dataset: left out of the config a dataset records.
RUN_KEYS = ("datasets", "results_dir", "check_disk_space")


@dataclass
class Dataset:
    name: str
    settings: dict  # the effective config of this dataset: shared keys, its overrides, its output
    images: list[str]  # relative paths to build, sorted
    labels: Labels | None
    left_out: list[tuple[str, str]]  # (relative path, reason): no row in the labels, on_error: skip
    shape: tuple[int, int]  # (height, width) of every stored image
    shards: list[list[str]]  # relative paths of each shard
    shard_bytes: list[int] = field(default_factory=list)  # the source bytes of each shard, as scanned

    @property
    def output(self) -> str:
        return self.settings["output"]

    @property
    def layout(self) -> Layout:
        """Where its files lie: the shard folder, stats and figures are named after its output."""
        return Layout(self.output)

    @property
    def shard_names(self) -> list[str]:
        return [shard_name(i, len(self.shards)) for i in range(len(self.shards))]

    @property
    def row_bytes(self) -> int:
        """Bytes of one stored image, with its masks."""
        masks = len(self.labels.classes) if self.labels is not None and self.labels.kind == "masks" else 0
        return self.shape[0] * self.shape[1] * 3 + (mask_bytes((*self.shape, masks)) if masks else 0)

    def manifest(self, shard: int) -> str:
        """The shard's manifest: its images with their sizes and mtimes, the shard job's input."""
        return self.layout.manifest(shard_name(shard, len(self.shards)))

    def pixel_params(self) -> dict:
        """Every setting that changes stored pixels: a change to one redoes every shard of this dataset.

        Nothing else goes here: adding or removing one image must not change them.
        """
        s = self.settings
        resizing = s["image_size"] is not None
        return {
            "shape": list(self.shape),
            "compression": s["compression"],
            "resize": s["resize"] if resizing else None,
            "pad_value": s["pad_value"] if resizing else 0,
            "reducing_gap": s["reducing_gap"] if resizing else None,
        }

    def labels_digest(self, shard: int) -> str:
        """Changes exactly when the labels of this shard's images change."""
        return self.labels.digest(self.shards[shard]) if self.labels else ""


def dataset_settings(config: dict, defaults: dict) -> dict[str, dict]:
    """The effective config of each dataset of the run, by name, from a validated config."""
    if not config.get("datasets"):
        name = os.path.splitext(os.path.basename(config["output"]))[0]
        return {name: {k: v for k, v in config.items() if k not in RUN_KEYS}}
    for key in SINGLE_KEYS:
        if config[key] != defaults.get(key):
            raise ImgshardError(
                f"config: {key} = {config[key]!r} is set along with datasets;"
                f" give each dataset its own {key} under datasets: instead"
            )
    shared = {k: v for k, v in config.items() if k not in RUN_KEYS and k not in SINGLE_KEYS}
    return {
        name: {**shared, "image_list": None, "labels": None, **own, "output": os.path.join(config["results_dir"], f"{name}.h5")}
        for name, own in config["datasets"].items()
    }


def plan(config: dict, defaults: dict) -> dict[str, Dataset]:
    """Discover, label, size-check and shard every dataset of the run."""
    datasets = {}
    for name, settings in dataset_settings(config, defaults).items():
        try:
            datasets[name] = _plan_one(name, settings)
        except ImgshardError as e:
            prefix = f"datasets.{name}: " if config.get("datasets") else ""
            raise ImgshardError(f"{prefix}{e}") from None
    return datasets


def _plan_one(name: str, s: dict) -> Dataset:
    images = find_images(s["images_dir"], s["image_list"])
    stats, unreadable = manifest.stat_all(s["images_dir"], images)
    left_out = []
    if unreadable:
        # A dangling symbolic link (its target deleted, as happens in symlink farms), or a file gone since the scan.
        if s["on_error"] != "skip":
            first, reason = next(iter(unreadable.items()))
            more = f" (and {len(unreadable) - 1} more)" if len(unreadable) > 1 else ""
            raise ImgshardError(f"{os.path.join(s['images_dir'], first)}: {reason}{more}; remove it, or set on_error: skip")
        left_out = list(unreadable.items())
        images = [rel for rel in images if rel not in unreadable]
    labels = None
    if s["labels"] == FOLDERS:
        labels = folder_labels(images, folder_classes(images))
        images, outside = align_folders(labels, images, s["images_dir"], s["on_error"])
        left_out += outside
    elif s["labels"]:
        labels = read_labels(s["labels"])
        images, unlabelled, warnings = align(labels, images, s["labels"], s["on_error"])
        left_out += unlabelled
        for warning in warnings:
            print(f"imgshard: warning: {warning}", file=sys.stderr)
    dataset = Dataset(name, s, images, labels, left_out, (0, 0), assign(images, s["shards"]))
    size = write_manifests(dataset, stats, CommonSize(s["images_dir"]) if s["image_size"] is None else None)
    dataset.shape = tuple(s["image_size"]) if s["image_size"] else size.result(images)[:2]
    return dataset


def write_manifests(dataset: Dataset, stats: dict[str, tuple[int, int]], size: CommonSize | None) -> CommonSize | None:
    """Bring every shard's manifest up to date; with ``size``, check each image's header size against it."""
    images_dir = dataset.settings["images_dir"]
    # Manifests a scan killed midway left half-written: one look at the folder per run.
    remove_stale_temps(dataset.layout.manifests_glob)
    dataset.shard_bytes = [sum(stats[rel][0] for rel in relpaths) for relpaths in dataset.shards]
    for shard, relpaths in enumerate(dataset.shards):
        path = dataset.manifest(shard)
        previous = manifest.read_text(path)
        text = manifest.shard_text(images_dir, relpaths, stats, previous, headers=size is not None)
        manifest.write_if_changed(path, text, previous)
        if size is not None:
            for rel, header in manifest.header_sizes(text):
                size.add(rel, header)
    return size
