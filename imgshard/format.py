"""The on-disk format: every dataset, attribute, folder and file name imgshard writes, and its version.

Each stage that writes a file (build/, publish/) and each that reads one
(read/, tools/) takes its names from here, so a name is spelled once. Where
a dataset's files lie on disk is layout.py's, from these names.

A dataset file (``results/<name>.h5``, a snapshot) holds, all of N rows:
``images`` (N, H, W, 3) uint8 RGB; ``mask_bits`` (N, B) uint8, each row an
image's (H, W, K) masks of 0/1 packed eight to a byte (codecs.py: the
``mask_shape`` and ``bit_order`` attributes say how), or ``labels`` (N,)
int64, either with ``classes`` and ``class_counts`` attributes; ``paths``,
``sha256``, ``original_size`` (N, 2). Pixel rows are stored plainly
(contiguous) or one row a chunk through a filter (codecs.py). A shard index
(``shard-NNN.h5``) holds the same listing, plus which part file and row of
it holds each image. Files of format 2 held ``masks`` (N, H, W, K) itself,
lzf-compressed: readers still read them.
"""

from __future__ import annotations

import h5py

# Bump when the files a shard job writes change shape: a shard job's settings
# carry it, so every shard reruns once after an upgrade.
FORMAT = 3

# --- datasets of a dataset file, a shard index and a part file ---------------------
IMAGES = "images"
MASK_BITS = "mask_bits"
MASKS = "masks"  # what a reader delivers from mask_bits; the stored name in format 2
LABELS = "labels"
PATHS = "paths"
SHA256 = "sha256"
ORIGINAL_SIZE = "original_size"

# --- datasets of a shard index only -----------------------------------------------
SKIPPED = "skipped"  # group: the paths and reasons of the images on_error: skip left out
REASONS = "reasons"  # its second dataset
ROW_KEYS = "row_keys"  # what each image's row was made from (build/reuse.py)
PARTS = "parts"  # the part files, relative to the shard folder
PART_ROWS = "part_rows"  # rows of each part's images dataset
PART_BYTES = "part_bytes"  # each part file's size: a part that no longer has it is damaged
PART = "part"  # each listed image's part
ROW = "row"  # and its row there

# --- attributes --------------------------------------------------------------------
VERSION_ATTR = "imgshard_version"  # root of every file imgshard writes
TARGET_ATTR = "target"  # root of a shard index: "masks" or "labels"
CLASSES_ATTR = "classes"  # of masks and labels (and a shard index's root)
CLASS_COUNTS_ATTR = "class_counts"  # of masks or labels: images per class
MASK_SHAPE_ATTR = "mask_shape"  # of mask_bits: (H, W, K) of each row unpacked
BIT_ORDER_ATTR = "bit_order"  # of mask_bits: "little", numpy.unpackbits' bitorder
FINGERPRINT_ATTR = "reuse_fingerprint"  # root of a shard index: what its rows were made with
SKIPPED_ATTR = "skipped"  # root of a dataset file: JSON list of [path, reason]
SNAPSHOT_ATTR = "snapshot"  # root of a dataset file: its own path, relative to the dataset's folder
GATHER_ATTR = "gather"  # root of a dataset file: "virtual" or "copy"
CONFIG_ATTR = "config"  # root of a dataset file: the dataset's settings, JSON
IMAGES_DIR_ATTR = "images_dir"  # root of a dataset file: where the sources were, absolute
IMAGE_LIST_ATTR = "image_list"

# --- files and folders beside a dataset (see layout.py) ----------------------------
SHARDS_SUFFIX = ".shards"  # results/train.h5 -> results/train.shards/
STATS_SUFFIX = ".stats.json"  # results/train.h5 -> results/train.stats.json
REPORT_SUFFIX = ".report"
PARTS_DIR = "parts"
SNAPSHOTS_DIR = "snapshots"
PREVIOUS_DIR = "previous"
INDEX_PREFIX = "shard-"  # shard-NNN.h5, the shard's index; shard-NNN.json, its stats
MANIFEST_PREFIX = "manifest-"  # manifest-NNN.tsv

PATH_DTYPE = h5py.string_dtype("utf-8")
SHA256_DTYPE = h5py.string_dtype("ascii", 64)
ROW_KEY_DTYPE = "S32"
