"""Where a dataset's files lie: one object that names them all from the dataset's path.

    results/train.h5                  the published dataset (a hard link to its newest snapshot)
    results/train.stats.json          the gather's stats (the gather rule's declared output)
    results/train.shards/
        manifest-NNN.tsv              a shard's images with sizes and mtimes (the shard job's input)
        shard-NNN.h5, shard-NNN.json  a shard's index and stats (the shard job's outputs)
        previous/shard-NNN.h5         the last finished index of the shard (build/reuse.py)
        parts/NNN-<id>.h5             immutable part files holding the rows
        snapshots/<id>.h5             immutable dataset files, one per gather

Paths are as given (relative to the working directory, or absolute). A
layout made from a pattern (``Layout("results/{dataset}.h5")``) gives the
rules' patterns: ``.index("{shard}")`` is ``results/{dataset}.shards/shard-{shard}.h5``.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass

from .format import (
    INDEX_PREFIX,
    MANIFEST_PREFIX,
    PARTS_DIR,
    PREVIOUS_DIR,
    REPORT_SUFFIX,
    SHARDS_SUFFIX,
    SNAPSHOTS_DIR,
    STATS_SUFFIX,
)


def previous_of(index_path: str) -> str:
    """The second name a finished shard index gets, for the next run's plan (build/reuse.py)."""
    folder, base = os.path.split(index_path)
    return os.path.join(folder, PREVIOUS_DIR, base)


@dataclass(frozen=True)
class Layout:
    output: str  # results/train.h5

    @classmethod
    def of_index(cls, index_path: str, ext: str = ".h5") -> tuple[Layout, str]:
        """The layout a shard index belongs to, and the shard's name (``shard-007.h5`` -> ``007``)."""
        folder, base = os.path.split(index_path)
        if not folder.endswith(SHARDS_SUFFIX) or not base.startswith(INDEX_PREFIX) or not base.endswith(".h5"):
            raise ValueError(f"{index_path}: not a shard index path (<stem>{SHARDS_SUFFIX}/{INDEX_PREFIX}NNN.h5)")
        return cls(folder[: -len(SHARDS_SUFFIX)] + ext), base[len(INDEX_PREFIX) : -len(".h5")]

    @property
    def stem(self) -> str:
        """``results/train`` for ``results/train.h5``: everything else is named after it."""
        return os.path.splitext(self.output)[0]

    @property
    def stats(self) -> str:
        return self.stem + STATS_SUFFIX

    @property
    def report_dir(self) -> str:
        return self.stem + REPORT_SUFFIX

    @property
    def shards_dir(self) -> str:
        return self.stem + SHARDS_SUFFIX

    def manifest(self, name: str) -> str:
        return os.path.join(self.shards_dir, f"{MANIFEST_PREFIX}{name}.tsv")

    def index(self, name: str) -> str:
        return os.path.join(self.shards_dir, f"{INDEX_PREFIX}{name}.h5")

    def shard_stats(self, name: str) -> str:
        return os.path.join(self.shards_dir, f"{INDEX_PREFIX}{name}.json")

    def previous(self, name: str) -> str:
        return previous_of(self.index(name))

    @property
    def parts_dir(self) -> str:
        return os.path.join(self.shards_dir, PARTS_DIR)

    def part(self, relative: str) -> str:
        """A part as an index names it (relative to the shard folder)."""
        return os.path.join(self.shards_dir, relative)

    @property
    def snapshots_dir(self) -> str:
        return os.path.join(self.shards_dir, SNAPSHOTS_DIR)

    # Globs (the folder escaped) of the files of one kind, every shard's.
    @property
    def manifests_glob(self) -> str:
        return os.path.join(glob.escape(self.shards_dir), f"{MANIFEST_PREFIX}*.tsv")

    @property
    def indexes_glob(self) -> str:
        return os.path.join(glob.escape(self.shards_dir), f"{INDEX_PREFIX}*.h5")

    @property
    def previous_glob(self) -> str:
        return os.path.join(glob.escape(self.shards_dir), PREVIOUS_DIR, f"{INDEX_PREFIX}*.h5")
