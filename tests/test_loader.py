"""imgshard.Loader: exact permutations per epoch, DDP ranks, mid-epoch resume in a new process, aligned targets,
compressed datasets, both gather modes, the ring of buffers, and moving to a newer snapshot."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest

from imgshard import ImgshardError, Loader
from imgshard.plan.labels import read_labels
from tests.conftest import REPO, build_with_package, make_images, reference_pixels, write_image

N = 23  # not a multiple of any batch size or world size below


def fingerprint(image: np.ndarray) -> bytes:
    return image.tobytes()


@pytest.fixture(scope="module", params=["virtual", "copy"])
def dataset(request, tmp_path_factory):
    """23 images with class labels, in three shards; and which path each image's pixels are."""
    root = tmp_path_factory.mktemp(request.param)
    images = root / "images"
    rels = make_images(images, N)
    (root / "labels.csv").write_text("path,label\n" + "".join(f"{r},{['b', 'a', 'c'][i % 3]}\n" for i, r in enumerate(rels)))
    labels = read_labels(str(root / "labels.csv"))
    path = build_with_package(root, images, [rels[:10], rels[10:18], rels[18:]], mode=request.param, labels=labels)
    which = {fingerprint(reference_pixels(images, r)): i for i, r in enumerate(rels)}
    return path, which, [labels.rows[r][0] for r in rels]


def rows_of(loader, which, labels) -> list[list[int]]:
    """Each batch as the indices (into the image list) of its images, checking every label against its image."""
    out = []
    for images, targets in loader:
        assert images.dtype == np.uint8 and images.shape[1:] == (48, 64, 3) and len(targets) == len(images)
        batch = [which[fingerprint(image)] for image in images]
        assert list(targets) == [labels[i] for i in batch]
        out.append(batch)
    return out


def test_each_epoch_is_a_permutation_drawn_from_seed_and_epoch(dataset):
    path, which, labels = dataset
    with Loader(path, batch_size=5, shuffle=True, seed=7) as loader:
        assert len(loader) == 5 and loader.classes == ["a", "b", "c"]
        epochs = []
        for epoch in range(3):
            loader.set_epoch(epoch)
            batches = rows_of(loader, which, labels)
            assert [len(b) for b in batches] == [5, 5, 5, 5, 3]
            flat = [i for b in batches for i in b]
            assert sorted(flat) == list(range(N))
            epochs.append(flat)
    assert len({tuple(e) for e in epochs}) == 3  # three different permutations, epoch 0 and 2 included
    with Loader(path, batch_size=5, shuffle=True, seed=7) as again:
        again.set_epoch(1)
        assert [i for b in rows_of(again, which, labels) for i in b] == epochs[1]
    with Loader(path, batch_size=5, shuffle=False, drop_last=True) as plain:
        assert [i for b in rows_of(plain, which, labels) for i in b] == list(range(20))


@pytest.mark.parametrize("drop_last", [False, True])
def test_ranks_are_disjoint_cover_the_epoch_and_take_as_many_batches(dataset, drop_last):
    path, which, labels = dataset
    world = 4
    parts = []
    for rank in range(world):
        with Loader(path, batch_size=2, seed=3, rank=rank, world_size=world, drop_last=drop_last) as loader:
            loader.set_epoch(2)
            parts.append(rows_of(loader, which, labels))
    assert len({len(p) for p in parts}) == 1  # every rank the same number of batches: no DDP hang
    rows = [[i for b in p for i in b] for p in parts]
    assert len({len(r) for r in rows}) == 1
    flat = [i for r in rows for i in r]
    if drop_last:  # 23 rows over 4 ranks: 5 each (3 left out), then each rank's short last batch: 4 each, none twice
        assert len(flat) == 16 and len(set(flat)) == 16
    else:  # padded with the epoch's own first rows, as DistributedSampler pads
        assert len(flat) == 24 and set(flat) == set(range(N))


@pytest.mark.parametrize("drop_last", [False, True])
def test_rank_parts_are_torchs_distributed_sampler_parts(dataset, drop_last):
    """Each rank reads the rows torch's DistributedSampler gives it, padding rule included."""
    from torch.utils.data import DistributedSampler

    path, which, labels = dataset
    for world in (2, 4, 5):
        for rank in range(world):
            with Loader(path, batch_size=3, shuffle=False, rank=rank, world_size=world, drop_last=drop_last) as loader:
                got = [i for batch in rows_of(loader, which, labels) for i in batch]
            want = list(DistributedSampler(range(N), num_replicas=world, rank=rank, shuffle=False, drop_last=drop_last))
            if drop_last:  # the Loader also drops the rank's short last batch
                want = want[: len(want) // 3 * 3]
            assert got == want, (world, rank)
    # The rule itself, where padding exceeds the rows (2 rows over 5 ranks) and on empty epochs.
    from imgshard.read.sampler import rank_part

    for n in (0, 1, 2, 7):
        for world in (1, 3, 5):
            for rank in range(world):
                want = list(DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=False, drop_last=drop_last)) if n else []
                assert rank_part(np.arange(n), rank, world, drop_last).tolist() == want, (n, world, rank)


def _epoch_in_a_child(path: str, kind: str, queue) -> None:
    """One epoch read in a process of its own: each row's digest, in order."""
    from imgshard import Loader, batches

    if kind == "loader":
        with Loader(path, batch_size=4, seed=3, threads=2) as loader:
            loader.set_epoch(1)
            queue.put([hashlib.sha1(x.tobytes()).hexdigest() for b, _ in loader for x in b])
    else:
        queue.put([hashlib.sha1(x.tobytes()).hexdigest() for b, _ in batches(path, batch_size=4, shuffle=True, seed=3) for x in b])


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
@pytest.mark.parametrize("kind", ["loader", "batches"])
def test_loader_and_batches_read_alike_in_forked_and_spawned_processes(dataset, start_method, kind):
    import multiprocessing

    path, which, labels = dataset
    by_digest = {hashlib.sha1(k).hexdigest(): i for k, i in which.items()}
    # The parent holds a Loader open (threads, descriptors, a lock) while the child starts.
    with Loader(path, batch_size=4, seed=3) as parent:
        parent.set_epoch(1 if kind == "loader" else 0)
        want = [i for batch in rows_of(parent, which, labels) for i in batch]
        ctx = multiprocessing.get_context(start_method)
        queue = ctx.Queue()
        child = ctx.Process(target=_epoch_in_a_child, args=(str(path), kind, queue))
        child.start()
        got = [by_digest[d] for d in queue.get(timeout=120)]
        child.join(timeout=60)
    assert child.exitcode == 0
    assert got == want


def test_resume_in_a_new_process_continues_with_the_batches_not_taken(dataset, tmp_path):
    path, which, labels = dataset
    with Loader(path, batch_size=4, seed=11) as loader:
        loader.set_epoch(1)
        whole = rows_of(loader, which, labels)
        loader.set_epoch(1)
        taken = []
        it = iter(loader)
        for _ in range(3):  # the loader has read ahead of these three
            images, _ = next(it)
            taken.append([which[fingerprint(x)] for x in images])
        state = loader.state_dict()
        it.close()
    assert taken == whole[:3] and state["epoch"] == 1 and state["batch"] == 3
    assert resumed_in_a_new_process(dataset, state, "batch_size=4, seed=11") == whole[3:]


def resumed_in_a_new_process(dataset, state: dict, loader_args: str) -> list[list[int]]:
    """The batches a new process's ``Loader(path, <loader_args>)`` reads after ``load_state_dict(state)``,
    each checked for its labels."""
    path, which, labels = dataset
    code = f"""
import hashlib, json, sys
from imgshard import Loader
loader = Loader({str(path)!r}, {loader_args})
loader.load_state_dict(json.loads(sys.argv[1]))
for images, targets in loader:
    print(json.dumps([[hashlib.sha1(x.tobytes()).hexdigest() for x in images], targets.tolist()]))
"""
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(state)], capture_output=True, text=True, cwd=REPO, check=True)
    by_digest = {hashlib.sha1(k).hexdigest(): i for k, i in which.items()}
    rest = []
    for line in proc.stdout.splitlines():
        digests, targets = json.loads(line)
        batch = [by_digest[d] for d in digests]
        assert targets == [labels[i] for i in batch]
        rest.append(batch)
    return rest


def test_a_state_of_another_dataset_or_setting_is_refused(dataset):
    path, _, _ = dataset
    with Loader(path, batch_size=4) as loader:
        state = loader.state_dict()
    with Loader(path, batch_size=8) as other, pytest.raises(ImgshardError, match=r"cannot resume: the state has batch_size 4, this loader 8"):
        other.load_state_dict(state)
    with Loader(path, batch_size=4) as other, pytest.raises(ImgshardError, match=r"cannot resume: the state has rows 99"):
        other.load_state_dict({**state, "rows": 99})


def test_a_batch_stays_valid_while_the_next_is_taken(dataset):
    """The ring: the batch given and the one before it are never written while the caller may hold them."""
    path, which, labels = dataset
    with Loader(path, batch_size=2, seed=5, threads=2) as loader:
        held = []
        for images, targets in loader:
            held.append((images, images.copy(), targets, targets.copy()))
            if len(held) >= 2:
                view, copy, tview, tcopy = held[-2]
                np.testing.assert_array_equal(view, copy)
                np.testing.assert_array_equal(tview, tcopy)


def test_masks_come_aligned_with_their_images(tmp_path):
    from tests.images import random_masks, write_clouds_csv

    images = tmp_path / "images"
    rels = make_images(images, 7)
    truth = {rel: random_masks(i) for i, rel in enumerate(rels)}
    write_clouds_csv(tmp_path / "train.csv", truth)
    path = build_with_package(tmp_path, images, [rels[:3], rels[3:]], labels=read_labels(str(tmp_path / "train.csv")))
    which = {fingerprint(reference_pixels(images, r)): r for r in rels}
    seen = 0
    for images_batch, masks in Loader(path, batch_size=3, seed=1):
        assert masks.shape[1:] == (48, 64, 4)
        for image, mask in zip(images_batch, masks):
            np.testing.assert_array_equal(mask, truth[which[fingerprint(image)]])
            seen += 1
    assert seen == 7


@pytest.mark.parametrize("compression", ["lzf", "gzip"])
@pytest.mark.parametrize("mode", ["virtual", "copy"])
def test_compressed_datasets_load_the_same_pixels(tmp_path, compression, mode):
    images = tmp_path / "images"
    rels = make_images(images, 9)
    path = build_with_package(tmp_path, images, [rels[:5], rels[5:]], mode=mode, compression=compression)
    which = {fingerprint(reference_pixels(images, r)): r for r in rels}
    seen = [which[fingerprint(x)] for batch, _ in Loader(path, batch_size=4, seed=2) for x in batch]
    assert sorted(seen) == sorted(rels)


def test_refresh_moves_to_a_newer_snapshot_between_epochs(tmp_path):
    images = tmp_path / "images"
    rels = make_images(images, 6)
    path = build_with_package(tmp_path, images, [rels])
    loader = Loader(path, batch_size=4, shuffle=False)
    assert not loader.refresh()
    write_image(images / "zzz.jpg", seed=42)
    build_with_package(tmp_path, images, [rels + ["zzz.jpg"]])
    assert sum(len(b) for b, _ in loader) == 6  # still the snapshot it opened
    assert loader.refresh()
    last = [x.copy() for b, _ in loader for x in b]
    assert len(last) == 7
    np.testing.assert_array_equal(last[-1], reference_pixels(images, "zzz.jpg"))
    loader.close()


def test_bad_arguments_are_refused(dataset):
    path, _, _ = dataset
    with pytest.raises(ValueError, match="rank 4 is not one of world_size 4"):
        Loader(path, batch_size=2, rank=4, world_size=4)
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        Loader(path, batch_size=0)
    with pytest.raises(ImgshardError, match="no such file"):
        Loader(str(path) + ".nope", batch_size=2)


def test_batches_gives_masks_and_labels_aligned_with_their_images(tmp_path):
    from imgshard import batches
    from tests.images import random_masks, write_clouds_csv

    images = tmp_path / "images"
    rels = make_images(images, 6)
    truth = {rel: random_masks(i) for i, rel in enumerate(rels)}
    write_clouds_csv(tmp_path / "train.csv", truth)
    (tmp_path / "classes.csv").write_text("path,label\n" + "".join(f"{r},{'zyx'[i % 3]}\n" for i, r in enumerate(rels)))
    which = {fingerprint(reference_pixels(images, r)): r for r in rels}

    def masks_of(rel, target):
        np.testing.assert_array_equal(target, truth[rel])

    def label_of(rel, target):
        assert ["x", "y", "z"][target] == "zyx"[rels.index(rel) % 3], rel

    for csv, check in (("train.csv", masks_of), ("classes.csv", label_of)):
        root = tmp_path / csv.removesuffix(".csv")
        path = build_with_package(root, images, [rels[:4], rels[4:]], labels=read_labels(str(tmp_path / csv)))
        seen = 0
        for batch, targets in batches(path, batch_size=4, shuffle=True, seed=1):
            for image, target in zip(batch, targets):
                check(which[fingerprint(image)], target)
                seen += 1
        assert seen == 6


# --- shuffle="block": the order for datasets bigger than memory ---


def test_block_order_visits_every_row_once_per_epoch_reproducibly(dataset):
    path, which, labels = dataset
    # Blocks of 3 rows (block_bytes a little over 3 rows of 48x64x3): 23 rows in 8 blocks over the 3 shards' parts.
    with Loader(path, batch_size=4, shuffle="block", seed=5, block_bytes=3 * 48 * 64 * 3 + 10) as loader:
        assert len(loader) == 6
        epochs = []
        for epoch in range(3):
            loader.set_epoch(epoch)
            flat = [i for b in rows_of(loader, which, labels) for i in b]
            assert sorted(flat) == list(range(N))
            epochs.append(flat)
        assert len({tuple(e) for e in epochs}) == 3
    with Loader(path, batch_size=4, shuffle="block", seed=5, block_bytes=3 * 48 * 64 * 3 + 10) as again:
        again.set_epoch(1)
        assert [i for b in rows_of(again, which, labels) for i in b] == epochs[1]


@pytest.mark.parametrize("drop_last", [False, True])
def test_block_order_ranks_are_disjoint_cover_the_epoch_and_take_as_many_batches(dataset, drop_last):
    path, which, labels = dataset
    for world in (2, 4):
        parts = []
        for rank in range(world):
            with Loader(path, batch_size=2, shuffle="block", seed=3, rank=rank, world_size=world, drop_last=drop_last, block_bytes=20000) as loader:
                loader.set_epoch(2)
                parts.append([i for b in rows_of(loader, which, labels) for i in b])
                assert len(loader) == len(rows_of(loader, which, labels))
        assert len({len(p) for p in parts}) == 1  # as many rows, so as many batches, on every rank
        flat = [i for p in parts for i in p]
        if drop_last:  # each rank's share cut to N // world rows, then its short last batch dropped
            assert len(set(flat)) == len(flat) and len(parts[0]) == (N // world) // 2 * 2
        else:  # padded with the epoch's own first rows, as DistributedSampler pads
            assert set(flat) == set(range(N)) and len(flat) == -(-N // world) * world


def test_block_order_resumes_in_a_new_process_with_the_batches_not_taken(dataset):
    path, which, labels = dataset
    with Loader(path, batch_size=4, shuffle="block", seed=11, block_bytes=30000) as loader:
        loader.set_epoch(1)
        whole = rows_of(loader, which, labels)
        loader.set_epoch(1)
        it = iter(loader)
        taken = [[which[fingerprint(x)] for x in next(it)[0]] for _ in range(2)]
        state = loader.state_dict()
        it.close()
    assert taken == whole[:2] and state["shuffle"] == "block"
    assert resumed_in_a_new_process(dataset, state, 'batch_size=4, shuffle="block", seed=11, block_bytes=30000') == whole[2:]


@pytest.mark.parametrize("compression", ["none", "lzf"])
def test_block_order_reads_masks_and_compressed_rows_exactly(tmp_path, compression):
    from tests.images import random_masks, write_clouds_csv

    images = tmp_path / "images"
    rels = make_images(images, 11)
    truth = {rel: random_masks(i) for i, rel in enumerate(rels)}
    write_clouds_csv(tmp_path / "train.csv", truth)
    path = build_with_package(tmp_path, images, [rels[:6], rels[6:]], labels=read_labels(str(tmp_path / "train.csv")), compression=compression)
    which = {fingerprint(reference_pixels(images, r)): r for r in rels}
    seen = []
    with Loader(path, batch_size=3, shuffle="block", seed=1, block_bytes=20000) as loader:
        for batch, masks in loader:
            for image, mask in zip(batch, masks):
                rel = which[fingerprint(image)]
                np.testing.assert_array_equal(mask, truth[rel])
                seen.append(rel)
    assert sorted(seen) == sorted(rels)


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_block_sampler_gives_a_dataloader_the_loaders_batches(dataset, start_method):
    import torch

    from imgshard import BlockSampler, H5ImageDataset, collate

    path, which, labels = dataset
    ds = H5ImageDataset(path)
    for rank in range(2):
        sampler = BlockSampler(ds, batch_size=4, seed=9, rank=rank, world_size=2, block_bytes=30000)
        sampler.set_epoch(3)
        loader = torch.utils.data.DataLoader(ds, batch_size=4, sampler=sampler, num_workers=2, multiprocessing_context=start_method, collate_fn=collate)
        got = [[which[fingerprint(x.numpy())] for x in images] for images, _ in loader]
        with Loader(path, batch_size=4, shuffle="block", seed=9, rank=rank, world_size=2, block_bytes=30000) as reference:
            reference.set_epoch(3)
            assert got == rows_of(reference, which, labels)
        assert len(sampler) == sum(len(b) for b in got)
    ds.close()


def test_block_order_after_a_refresh_reads_the_new_rows(tmp_path):
    images = tmp_path / "images"
    rels = make_images(images, 6)
    path = build_with_package(tmp_path, images, [rels])
    with Loader(path, batch_size=4, shuffle="block", block_bytes=20000) as loader:
        write_image(images / "zzz.jpg", seed=42)
        build_with_package(tmp_path, images, [rels + ["zzz.jpg"]])
        assert sum(len(b) for b, _ in loader) == 6
        assert loader.refresh()
        got = sorted(x.tobytes() for b, _ in loader for x in b)
    assert got == sorted(reference_pixels(images, r).tobytes() for r in rels + ["zzz.jpg"])


def test_shuffle_takes_true_false_or_block(dataset):
    path, _, _ = dataset
    with pytest.raises(ValueError, match="shuffle must be True, False or 'block', not 'blocks'"):
        Loader(path, batch_size=2, shuffle="blocks")


@pytest.mark.parametrize("n, per_block, batch, world", [(0, 4, 8, 1), (1, 4, 8, 2), (1000, 7, 16, 1), (1003, 27, 64, 3), (50, 50, 8, 4)])
def test_block_order_takes_each_row_once_and_a_block_at_most_once_a_batch(n, per_block, batch, world):
    """The order itself, over blocks as a layout gives them: every row once (padding as DistributedSampler
    pads), and no batch takes two rows of one block while the active set has other blocks to give."""
    from imgshard.read.order import Blocks

    blocks = [(s, min(per_block, n - s)) for s in range(0, n, per_block)]
    order = Blocks(blocks, batch)
    parts = [order.part(seed=4, epoch=1, rank=r, world_size=world, drop_last=False) for r in range(world)]
    assert len({len(p) for p in parts}) == 1  # as many rows on every rank
    assert sum(len(p) for p in parts) == (-(-n // world) * world if n else 0)  # padded as DistributedSampler pads
    assert set(np.concatenate(parts).tolist()) == set(range(n))
    assert np.array_equal(parts[0], order.part(seed=4, epoch=1, rank=0, world_size=world, drop_last=False))  # reproducible
    for part in parts:
        block_of = order.block_of[part]
        for k in range(0, len(part) - batch + 1, batch):
            in_batch = block_of[k : k + batch]
            # The last batches of an epoch may share blocks: only those once fewer than ``batch`` blocks are left.
            left = len(set(block_of[k:].tolist()))
            if left >= 2 * batch:
                assert len(set(in_batch.tolist())) == batch, k
