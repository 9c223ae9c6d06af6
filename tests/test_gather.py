"""gather called directly: what it refuses to map, and both modes agreeing."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from imgshard.build import decode_shard
from imgshard.errors import ImgshardError
from imgshard.gather import gather
from imgshard.geometry import Geometry
from tests.conftest import make_images


@pytest.fixture
def shards(tmp_path):
    rels = make_images(tmp_path / "images", 6)
    files = []
    for k, part in enumerate((rels[:4], rels[4:], [])):
        out = tmp_path / f"shard-{k}.h5"
        decode_shard([str(tmp_path / "images" / r) for r in part], part, str(out), Geometry(48, 64), workers=1)
        files.append(str(out))
    return files


def test_virtual_and_copy_hold_the_same_data(shards, tmp_path):
    gather(shards, str(tmp_path / "v.h5"), (48, 64), mode="virtual")
    gather(shards, str(tmp_path / "c.h5"), (48, 64), mode="copy")
    with h5py.File(tmp_path / "v.h5") as v, h5py.File(tmp_path / "c.h5") as c:
        assert v["images"].is_virtual and not c["images"].is_virtual
        np.testing.assert_array_equal(v["images"][()], c["images"][()])
        assert list(v["paths"].asstr()[()]) == list(c["paths"].asstr()[()])
        assert v["images"].shape == (6, 48, 64, 3)


def test_missing_shard_is_refused_not_read_as_zeros(shards, tmp_path):
    (tmp_path / "shard-1.h5").unlink()
    with pytest.raises(ImgshardError, match=r"shard-1.h5: shard file is missing"):
        gather(shards, str(tmp_path / "v.h5"), (48, 64))
    assert not (tmp_path / "v.h5").exists()


def test_shard_of_another_shape_is_refused(shards, tmp_path):
    with pytest.raises(ImgshardError, match=r"shard-0.h5: images are \(4, 48, 64, 3\) uint8, expected \(4, 50, 64, 3\)"):
        gather(shards, str(tmp_path / "v.h5"), (50, 64))


def test_file_that_is_not_hdf5_is_refused(shards, tmp_path):
    (tmp_path / "shard-2.h5").write_bytes(b"not hdf5")
    with pytest.raises(ImgshardError, match=r"shard-2.h5: not a readable HDF5 shard file"):
        gather(shards, str(tmp_path / "v.h5"), (48, 64))
