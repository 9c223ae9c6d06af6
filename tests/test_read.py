"""Reading the dataset back: H5ImageDataset in a real DataLoader, and the NumPy batch iterator."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest

from imgshard import H5ImageDataset, ImgshardError, batches
from imgshard.build import decode_shard
from imgshard.gather import gather
from imgshard.geometry import Geometry
from tests.conftest import REPO, make_images, reference_pixels


@pytest.fixture(scope="module", params=["virtual", "copy"])
def dataset(request, tmp_path_factory):
    """A 10-image dataset in both gather modes, built by the package's own steps."""
    root = tmp_path_factory.mktemp(request.param)
    rels = make_images(root / "images", 10)
    shards = []
    for k, part in enumerate((rels[:6], rels[6:])):
        out = root / "results/dataset.shards" / f"shard-{k:03d}.h5"
        decode_shard([str(root / "images" / r) for r in part], part, str(out), Geometry(48, 64), workers=1)
        shards.append(str(out))
    path = root / "results/dataset.h5"
    gather(shards, str(path), (48, 64), mode=request.param)
    return path, root / "images", rels


def test_dataset_items_are_the_stored_images(dataset):
    path, images, rels = dataset
    ds = H5ImageDataset(path)
    assert len(ds) == 10 and ds.target is None and ds.image_shape == (48, 64, 3)
    for i, rel in enumerate(rels):
        assert ds.path_of(i) == rel
        np.testing.assert_array_equal(ds[i], reference_pixels(images, rel))
    np.testing.assert_array_equal(ds[-1], ds[9])
    with pytest.raises(IndexError):
        ds[10]


def test_transform_sees_each_item(dataset):
    path, _, _ = dataset
    ds = H5ImageDataset(path, transform=lambda image: image.mean())
    assert isinstance(ds[0], np.floating)


def test_dataset_opened_in_the_parent_still_pickles_and_reopens(dataset):
    path, _, _ = dataset
    ds = H5ImageDataset(path)
    first = ds[0]  # opens the file in this process
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._file is None
    np.testing.assert_array_equal(clone[0], first)


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_dataloader_with_two_workers(dataset, start_method):
    torch = pytest.importorskip("torch")
    path, images, rels = dataset
    ds = H5ImageDataset(path)
    ds[0]  # a handle open in the parent must not leak into forked workers
    loader = torch.utils.data.DataLoader(
        ds, batch_size=3, num_workers=2, multiprocessing_context=start_method, shuffle=False
    )
    stacked = torch.cat(list(loader)).numpy()
    assert stacked.shape == (10, 48, 64, 3) and stacked.dtype == np.uint8
    for i, rel in enumerate(rels):
        np.testing.assert_array_equal(stacked[i], reference_pixels(images, rel))


def test_importing_the_reader_does_not_import_torch():
    code = "import sys, imgshard; from imgshard import H5ImageDataset, batches; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


@pytest.mark.parametrize("shuffle", [False, True])
def test_batches_cover_every_image_once(dataset, shuffle):
    path, images, rels = dataset
    seen = []
    for imgs, targets in batches(path, batch_size=4, shuffle=shuffle, seed=3):
        assert targets is None and imgs.shape[1:] == (48, 64, 3) and len(imgs) <= 4
        seen += [img.copy() for img in imgs]
    assert len(seen) == 10
    expected = {rel: reference_pixels(images, rel) for rel in rels}
    order = [next(r for r, ref in expected.items() if np.array_equal(img, ref)) for img in seen]
    assert sorted(order) == sorted(rels)
    assert (order != rels) == shuffle


def test_batches_reuse_one_buffer_and_can_drop_the_last(dataset):
    path, _, _ = dataset
    got = list(batches(path, batch_size=4, drop_last=True))
    assert [len(b) for b, _ in got] == [4, 4]
    assert np.shares_memory(got[0][0], got[1][0])


def test_virtual_dataset_with_a_missing_shard_is_refused(tmp_path):
    rels = make_images(tmp_path / "images", 3)
    shard = tmp_path / "shards/shard-000.h5"
    decode_shard([str(tmp_path / "images" / r) for r in rels], rels, str(shard), Geometry(48, 64), workers=1)
    gather([str(shard)], str(tmp_path / "ds.h5"), (48, 64))
    shard.unlink()
    with pytest.raises(ImgshardError, match=r"shard file 'shards/shard-000.h5' of its virtual dataset is missing"):
        H5ImageDataset(tmp_path / "ds.h5")
    with pytest.raises(ImgshardError, match="is missing"):
        next(batches(tmp_path / "ds.h5", 2))
