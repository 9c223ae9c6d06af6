"""Reading the dataset back: H5ImageDataset in a real DataLoader, batches(), and what a reader refuses."""

from __future__ import annotations

import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from imgshard import H5ImageDataset, ImgshardError, batches, collate
from tests.conftest import REPO, build_with_package, make_images, reference_pixels


@pytest.fixture(scope="module", params=["virtual", "copy"])
def dataset(request, tmp_path_factory):
    """A 10-image dataset in both gather modes, built by the package's own steps."""
    root = tmp_path_factory.mktemp(request.param)
    rels = make_images(root / "images", 10)
    path = build_with_package(root, root / "images", [rels[:6], rels[6:]], mode=request.param)
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
    path, images, rels = dataset
    ds = H5ImageDataset(path, transform=lambda image: float(image.mean()))
    assert ds[3] == pytest.approx(reference_pixels(images, rels[3]).mean())


def test_dataset_opened_in_the_parent_still_pickles_and_reopens(dataset):
    path, _, _ = dataset
    ds = H5ImageDataset(path)
    first = ds[0]  # opens the files in this process
    clone = pickle.loads(pickle.dumps(ds))
    assert clone.snapshot._fds is None and clone.snapshot._fd is None
    np.testing.assert_array_equal(clone[0], first)


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
@pytest.mark.parametrize("batched", [True, False], ids=["collate", "default-collate"])
def test_dataloader_with_two_workers(dataset, start_method, batched):
    path, images, rels = dataset
    ds = H5ImageDataset(path)
    ds[0]  # the parent has its files open when the workers start (see the test below)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=3, num_workers=2, multiprocessing_context=start_method, shuffle=False, collate_fn=collate if batched else None
    )
    got = list(loader)
    stacked = torch.cat([b[0] if batched else b for b in got]).numpy()
    if batched:
        assert all(targets is None for _, targets in got)
    assert stacked.shape == (10, 48, 64, 3) and stacked.dtype == np.uint8
    for i, rel in enumerate(rels):
        np.testing.assert_array_equal(stacked[i], reference_pixels(images, rel))


class _WhoRead(torch.utils.data.Dataset):
    """Each item with the process that read it and the descriptors its snapshot read through there."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        import os

        image = self.ds[i]
        return image, os.getpid(), self.ds.snapshot._pid, list(self.ds.snapshot._fds)


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_workers_read_through_files_of_their_own_not_the_parents(dataset, start_method):
    import os

    path, images, rels = dataset
    ds = H5ImageDataset(path)
    ds[0]  # the parent's descriptors, inherited by forked workers
    parent_fds = set(ds.snapshot._fds)
    loader = torch.utils.data.DataLoader(_WhoRead(ds), batch_size=None, num_workers=2, multiprocessing_context=start_method)
    workers = set()
    for i, (image, pid, snapshot_pid, fds) in enumerate(loader):
        assert pid != os.getpid() and snapshot_pid == pid  # the worker's own handles, made in the worker
        assert not set(fds) & parent_fds  # no read goes through a descriptor the parent also reads through
        np.testing.assert_array_equal(image.numpy(), reference_pixels(images, rels[i]))
        workers.add(pid)
    assert len(workers) == 2
    ds.close()


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_batches_kept_by_the_caller_keep_their_pixels(tmp_path, start_method):
    """Workers reuse a ring of batch buffers: a slot is written again only once the main process let
    go of every view of it. A caller that keeps every batch (more than the ring holds) gets each with
    its own pixels, masks aligned; one that lets go has them reused."""
    from imgshard.plan.labels import read_labels
    from imgshard.read import ring
    from tests.images import random_masks, write_clouds_csv

    images = tmp_path / "images"
    rels = make_images(images, 31)
    truth = {rel: random_masks(i) for i, rel in enumerate(rels)}
    write_clouds_csv(tmp_path / "train.csv", truth)
    path = build_with_package(tmp_path, images, [rels], labels=read_labels(str(tmp_path / "train.csv")))
    ds = H5ImageDataset(path)
    loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=2, multiprocessing_context=start_method, collate_fn=collate)
    kept = list(loader)  # 31 batches, about 15 per worker: more than its ring's slots
    assert len(kept) == 31 > 2 * ring.SLOTS
    for (image, masks), rel in zip(kept, rels):
        np.testing.assert_array_equal(image[0].numpy(), reference_pixels(images, rel))
        np.testing.assert_array_equal(masks[0].numpy(), truth[rel])
    assert ring._attached  # the fast path ran: the main process maps the workers' rings
    del kept
    for epoch in range(3):  # letting go of each batch: slots come round again; each epoch new workers
        seen = 0
        for image, masks in loader:
            seen += 1
            np.testing.assert_array_equal(image[0].numpy(), reference_pixels(images, rels[seen - 1]))
        assert seen == 31
    # the main process lets go of the rings of workers that are gone: two workers' three segments each
    assert len(ring._attached) <= 6


def test_importing_the_reader_does_not_import_torch():
    code = "import sys, imgshard; from imgshard import H5ImageDataset, Loader, batches; print('torch' in sys.modules)"
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


def test_batches_reuse_a_ring_of_buffers_and_can_drop_the_last(dataset):
    path, _, _ = dataset
    got = list(batches(path, batch_size=2, drop_last=False))
    assert [len(b) for b, _ in got] == [2, 2, 2, 2, 2]
    assert [len(b) for b, _ in batches(path, batch_size=4, drop_last=True)] == [4, 4]
    # each batch is a view of the loader's ring (threads + 2 buffers): the same memory comes round again
    ring = next(k for k in range(1, 5) if np.shares_memory(got[0][0], got[k][0]))
    assert not np.shares_memory(got[0][0], got[1][0]) and ring >= 3


def test_virtual_dataset_with_a_missing_part_is_refused(tmp_path):
    rels = make_images(tmp_path / "images", 3)
    path = build_with_package(tmp_path, tmp_path / "images", [rels])
    shutil.rmtree(tmp_path / "results/dataset.shards/parts")
    with pytest.raises(ImgshardError, match=r"parts/000-\w+\.h5: part file of the virtual dataset is missing \(it would read as zeros\)"):
        H5ImageDataset(path)
    with pytest.raises(ImgshardError, match="is missing"):
        next(batches(path, 2))


def test_a_reader_opened_before_the_shard_folder_was_deleted_never_reads_zeros(tmp_path):
    """The user deletes dataset.shards/: a reader that holds the snapshot still reads its rows (its
    files stay open); a process that opens the parts only now gets a clear error, never zeros."""
    rels = make_images(tmp_path / "images", 4)
    path = build_with_package(tmp_path, tmp_path / "images", [rels])
    ds = H5ImageDataset(path)
    ds[0]  # this process has the part open now
    shutil.rmtree(tmp_path / "results/dataset.shards")
    np.testing.assert_array_equal(ds[2], reference_pixels(tmp_path / "images", rels[2]))
    clone = pickle.loads(pickle.dumps(ds))  # as a spawned DataLoader worker gets it
    with pytest.raises(ImgshardError, match=r"the snapshot this reader opened .* is gone; open the dataset again"):
        clone[0]
