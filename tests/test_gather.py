"""gather called directly: what it refuses to map, and both modes agreeing."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from imgshard.build.shard import ShardJob, build_shard
from imgshard.errors import ImgshardError
from imgshard.publish.gather import gather
from imgshard.pixels.geometry import Geometry
from imgshard.build.index import read_index
from tests.conftest import make_images


@pytest.fixture
def shards(tmp_path):
    rels = make_images(tmp_path / "images", 6)
    files = []
    for k, part in enumerate((rels[:4], rels[4:], [])):
        out = tmp_path / f"shard-{k}.h5"
        build_shard(ShardJob([str(tmp_path / "images" / r) for r in part], part, str(out), Geometry(48, 64), shard=k, workers=1))
        files.append(str(out))
    return files


@pytest.mark.parametrize("compression", ["none", "lzf"])
def test_virtual_and_copy_hold_the_same_data(tmp_path, compression):
    rels = make_images(tmp_path / "images", 6)
    shards = []
    for k, part in enumerate((rels[:4], rels[4:], [])):
        out = tmp_path / f"shard-{k}.h5"
        sources = [str(tmp_path / "images" / r) for r in part]
        build_shard(ShardJob(sources, part, str(out), Geometry(48, 64), shard=k, workers=1, compression=compression))
        shards.append(str(out))
    gather(shards, str(tmp_path / "v.h5"), (48, 64), mode="virtual", compression=compression)
    gather(shards, str(tmp_path / "c.h5"), (48, 64), mode="copy", compression=compression)
    with h5py.File(tmp_path / "v.h5") as v, h5py.File(tmp_path / "c.h5") as c:
        assert v["images"].is_virtual and not c["images"].is_virtual
        # uncompressed rows are one contiguous run, copied by the kernel; compressed ones chunk by chunk
        assert c["images"].chunks == (None if compression == "none" else (1, 48, 64, 3))
        assert c["images"].compression == (None if compression == "none" else compression)
        np.testing.assert_array_equal(v["images"][()], c["images"][()])
        assert list(v["paths"].asstr()[()]) == list(c["paths"].asstr()[()]) == rels
        assert v["images"].shape == (6, 48, 64, 3)


def test_missing_part_is_refused_not_read_as_zeros(shards, tmp_path):
    part = tmp_path / read_index(shards[1]).parts[0]
    part.unlink()
    with pytest.raises(ImgshardError, match=rf"{part}: part file of shard .*shard-1.h5 is missing; delete .*shard-1.h5 and rerun"):
        gather(shards, str(tmp_path / "v.h5"), (48, 64))
    assert not (tmp_path / "v.h5").exists()


def test_missing_index_is_refused(shards, tmp_path):
    (tmp_path / "shard-1.h5").unlink()
    with pytest.raises(ImgshardError, match=r"shard-1.h5: shard index is missing"):
        gather(shards, str(tmp_path / "v.h5"), (48, 64))


def test_part_of_another_shape_is_refused(shards, tmp_path):
    with pytest.raises(ImgshardError, match=r"images are \(4, 48, 64, 3\) uint8, expected \(4, 50, 64, 3\)"):
        gather(shards, str(tmp_path / "v.h5"), (50, 64))


def test_truncated_part_is_refused(shards, tmp_path):
    part = tmp_path / read_index(shards[0]).parts[0]
    data = part.read_bytes()
    part.write_bytes(data[: len(data) - 1000])
    with pytest.raises(ImgshardError, match=rf"{part}: (truncated|not a readable part file).*(delete|rerun)"):
        gather(shards, str(tmp_path / "v.h5"), (48, 64))


def test_file_that_is_not_an_index_is_refused(shards, tmp_path):
    (tmp_path / "shard-2.h5").write_bytes(b"not hdf5")
    with pytest.raises(ImgshardError, match=r"shard-2.h5: not a readable shard index .*; delete it and rerun"):
        gather(shards, str(tmp_path / "v.h5"), (48, 64))
