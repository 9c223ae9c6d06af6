"""Masks and compressed rows on the reader's fast path: every codec stores and gives back exactly the rows an
uncompressed build stores, every mask equals its run-length encoding, read at offsets known at open, in the
Loader's threads and in a DataLoader's workers; datasets of format 2 still read."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import h5py
import imagecodecs
import numpy as np
import pytest
import yaml

from imgshard import H5ImageDataset, ImgshardError, Loader, collate
from imgshard.codecs import COMPRESSIONS, create_args, decoder_of, name_of
from imgshard.plan.labels import read_labels
from imgshard.tools.cli import info, main
from imgshard.tools.demo import write_demo
from tests.conftest import REPO, build_with_package
from tests.images import CLASSES, random_masks, stored_masks, write_clouds_csv

CODECS = ["lzf", "gzip", "lz4", "zstd"]


@pytest.fixture(scope="module")
def clouds_set(tmp_path_factory):
    """13 demo cloud images (smooth: every codec shrinks them) with random Clouds masks, and the pixels
    an uncompressed build stores for each."""
    root = tmp_path_factory.mktemp("clouds")
    images = root / "images"
    rels = sorted(write_demo(str(images), 13, 48, 64))
    truth = {rel: random_masks(i) for i, rel in enumerate(rels)}
    write_clouds_csv(root / "train.csv", truth)
    plain = build_with_package(root / "none", images, [rels[:7], rels[7:]], labels=read_labels(str(root / "train.csv")))
    with h5py.File(plain) as f:
        pixels = dict(zip(f["paths"].asstr()[()], f["images"][()]))
    return root, images, rels, truth, pixels


def build(clouds_set, name: str, mode: str = "virtual", compression: str = "none"):
    root, images, rels, _, _ = clouds_set
    labels = read_labels(str(root / "train.csv"))
    return build_with_package(root / name, images, [rels[:7], rels[7:]], mode=mode, labels=labels, compression=compression)


def paths_of(path) -> list[str]:
    with h5py.File(path) as f:
        return list(f["paths"].asstr()[()])


def check_epoch(loader: Loader, paths: list[str], truth: dict, pixels: dict) -> int:
    order = loader._order.part(loader.seed, loader.epoch, loader.rank, loader.world_size, loader.drop_last).tolist()
    k = 0
    for images, masks in loader:
        assert images.shape[1:] == (48, 64, 3) and masks.shape[1:] == (48, 64, len(CLASSES)) and masks.dtype == np.uint8
        for image, mask in zip(images, masks):
            rel = paths[order[k]]
            np.testing.assert_array_equal(image, pixels[rel], err_msg=rel)
            np.testing.assert_array_equal(mask, truth[rel], err_msg=rel)
            k += 1
    return k


@pytest.mark.parametrize("mode", ["virtual", "copy"])
@pytest.mark.parametrize("compression", CODECS)
def test_every_codec_gives_back_the_uncompressed_builds_rows_read_at_offsets(clouds_set, compression, mode):
    _, _, rels, truth, pixels = clouds_set
    path = build(clouds_set, f"{compression}-{mode}", mode, compression)
    with h5py.File(path) as f:
        np.testing.assert_array_equal(stored_masks(f), [truth[r] for r in f["paths"].asstr()[()]])
    lines, problems = info(str(path))
    assert problems == [] and f"compression: {compression}" in lines
    assert any(line.startswith("masks (images with each class): Fish ") for line in lines), lines
    paths = paths_of(path)
    for shuffle in (True, "block"):
        with Loader(path, batch_size=4, shuffle=shuffle, seed=3, block_bytes=30000) as loader:
            # Every row of both datasets at a byte offset taken at open, through a codec this reader decodes
            # (these random masks do not shrink: lzf and gzip store them as they are, and say so).
            for layout in loader.snapshot.layouts:
                assert layout.offset.min() >= 0 and set(layout.decoders) == set(layout.file_of.tolist())
            assert loader.snapshot.layout.coded.all()
            assert check_epoch(loader, paths, truth, pixels) == len(rels)
    if mode == "virtual":  # exported as it is stored: the same codec, the same rows
        copy = path.parent / "exported.h5"
        assert main(["export", str(path), str(copy)]) == 0
        with h5py.File(copy) as f:
            assert name_of(f["images"]) == name_of(f["mask_bits"]) == compression
            np.testing.assert_array_equal(f["images"][()], [pixels[r] for r in paths])
            np.testing.assert_array_equal(stored_masks(f), [truth[r] for r in paths])


@pytest.mark.parametrize("mode", ["virtual", "copy"])
def test_uncompressed_masks_are_bits_read_at_offsets(clouds_set, mode):
    """Stored plainly, contiguous: a sixth of the images' bytes for four classes, one preadv a row."""
    _, _, rels, truth, pixels = clouds_set
    path = build(clouds_set, f"none-{mode}", mode)
    with h5py.File(path) as f:
        bits = f["mask_bits"]
        assert bits.shape == (len(rels), 48 * 64 * 4 // 8) and bits.attrs["bit_order"] == "little"
        assert list(bits.attrs["mask_shape"]) == [48, 64, 4] and list(bits.attrs["classes"]) == CLASSES
        assert bits.compression is None and (bits.is_virtual or bits.chunks is None)
    with Loader(path, batch_size=5, seed=1) as loader:
        assert all(layout.offset.min() >= 0 and not layout.coded.any() for layout in loader.snapshot.layouts)
        assert check_epoch(loader, paths_of(path), truth, pixels) == len(rels)


@pytest.mark.parametrize("start_method", ["fork", "spawn"])
@pytest.mark.parametrize("compression", ["none", "lz4", "gzip"])
def test_dataloader_workers_decode_masks_and_compressed_rows_exactly(clouds_set, compression, start_method):
    import torch
    from torch.utils.data import DataLoader

    _, _, rels, truth, pixels = clouds_set
    path = build(clouds_set, f"{compression}-virtual", "virtual", compression)
    ds = H5ImageDataset(path)
    loader = DataLoader(ds, batch_size=4, shuffle=True, num_workers=2, collate_fn=collate, multiprocessing_context=start_method, generator=torch.Generator().manual_seed(0))
    seen = []
    for images, masks in loader:
        for image, mask in zip(images.numpy(), masks.numpy()):
            rel = next(r for r in rels if np.array_equal(pixels[r], image))
            np.testing.assert_array_equal(mask, truth[rel], err_msg=rel)
            seen.append(rel)
    assert sorted(seen) == sorted(rels)
    image, mask = ds[3]
    np.testing.assert_array_equal(mask, truth[ds.path_of(3)])
    ds.close()


def write_format_2(path, images: np.ndarray, masks: np.ndarray, paths: list[str], image_compression=None) -> None:
    """A dataset as imgshard 0.3 wrote it: ``masks`` itself, (N, H, W, K), lzf, one row a chunk."""
    with h5py.File(path, "w") as f:
        if image_compression:
            f.create_dataset("images", data=images, chunks=(1, *images.shape[1:]), compression=image_compression)
        else:
            f.create_dataset("images", data=images)
        m = f.create_dataset("masks", data=masks, chunks=(1, *masks.shape[1:]), compression="lzf")
        m.attrs["classes"] = CLASSES
        m.attrs["class_counts"] = masks.reshape(len(masks), -1, len(CLASSES)).any(axis=1).sum(axis=0)
        f.create_dataset("paths", data=paths, dtype=h5py.string_dtype("utf-8"))
        f.create_dataset("sha256", data=["0" * 64] * len(paths), dtype=h5py.string_dtype("ascii", 64))
        f.create_dataset("original_size", data=np.tile([48, 64], (len(paths), 1)))
        f.attrs["imgshard_version"] = "0.3.0"


@pytest.mark.parametrize("image_compression", [None, "gzip"])
def test_a_format_2_dataset_still_reads_and_exports_to_format_3(clouds_set, tmp_path, image_compression):
    _, _, rels, truth, pixels = clouds_set
    old = tmp_path / "old.h5"
    write_format_2(old, np.stack([pixels[r] for r in rels]), np.stack([truth[r] for r in rels]), rels, image_compression)
    with Loader(old, batch_size=4, seed=5) as loader:
        assert loader.target == "masks" and loader.classes == CLASSES
        assert check_epoch(loader, rels, truth, pixels) == len(rels)
    image, mask = H5ImageDataset(old)[2]
    np.testing.assert_array_equal(mask, truth[rels[2]])
    assert main(["export", str(old), str(tmp_path / "new.h5")]) == 0
    with h5py.File(tmp_path / "new.h5") as f:
        np.testing.assert_array_equal(stored_masks(f), [truth[r] for r in rels])
        assert list(f["mask_bits"].attrs["class_counts"]) == [sum(bool(truth[r][..., k].any()) for r in rels) for k in range(4)]


@pytest.mark.parametrize("damage", ["header", "short"])
def test_a_damaged_compressed_row_is_refused_naming_its_file(clouds_set, tmp_path, damage):
    """A chunk whose frame is broken, or that decodes to fewer bytes than a row, is an error naming the
    file and row, never a row partly filled."""
    codec = "zstd" if damage == "header" else "gzip"
    path = build(clouds_set, f"{codec}-copy-{damage}", "copy", codec)
    with h5py.File(path) as f:
        info = f["images"].id.get_chunk_info(5)
    with open(path, "r+b") as fh:
        fh.seek(info.byte_offset)
        if damage == "header":  # zstd's magic number gone
            fh.write(b"\0" * 8)
        else:  # a whole zlib stream of a shorter row, in the chunk's place
            short = imagecodecs.zlib_encode(bytes(100))
            assert len(short) <= info.size
            fh.write(short)
    # Named by the file that holds the bytes: the snapshot results/dataset.h5 names now.
    match = rf"{re.escape(str(path.parent))}/dataset.shards/snapshots/\w+\.h5: row 5 of images does not decode" + (r" \(100 bytes of its 9216\)" if damage == "short" else "")
    with Loader(path, batch_size=13, shuffle=False) as loader, pytest.raises(ImgshardError, match=match):
        next(iter(loader))


def test_compression_value_outside_the_schema_is_refused():
    with pytest.raises(ValueError, match=r"compression: 'brotli' is none of none, lzf, gzip, lz4, zstd"):
        create_args("brotli")


def h5dump(*args, env=None):
    if not shutil.which("h5dump"):
        pytest.skip("h5dump (Debian's hdf5-tools) is not installed; .ci/run installs it")
    return subprocess.run(["h5dump", *map(str, args)], capture_output=True, text=True, cwd="/", env=env)


def test_the_hdf5_command_line_tools_read_masks_and_plugin_compressed_rows_with_the_plugin_path(clouds_set):
    """The default stores plain HDF5 (h5dump reads the bits and what they mean); lz4 and zstd need the
    plugin folder hdf5plugin ships, named in HDF5_PLUGIN_PATH, as the README says."""
    import hdf5plugin

    _, _, rels, truth, pixels = clouds_set
    plain = build(clouds_set, "none-copy", "copy")
    out = h5dump("-a", "/mask_bits/mask_shape", "-d", "/mask_bits", "-s", "0,0", "-c", "1,4", plain)
    assert out.returncode == 0, out.stderr
    with h5py.File(plain) as f:
        first = f["mask_bits"][0, :4].tolist()
    assert "48, 64, 4" in out.stdout
    assert [int(v) for v in re.findall(r"\(0,\d\): (\d+), (\d+), (\d+), (\d+)", out.stdout)[0]] == first
    packed = build(clouds_set, "lz4-copy", "copy", "lz4")
    args = ["-d", "/images", "-s", "0,0,0,0", "-c", "1,1,2,3", packed]
    env = {k: v for k, v in os.environ.items() if k != "HDF5_PLUGIN_PATH"}
    values = lambda out: [int(v) for v in re.findall(r": (\d+), (\d+), (\d+)", out.stdout) for v in v]  # noqa: E731
    assert values(h5dump(*args, env=env)) == []  # without the plugins h5dump shows no data (and exits 0)
    out = h5dump(*args, env={**env, "HDF5_PLUGIN_PATH": hdf5plugin.PLUGIN_PATH})
    assert out.returncode == 0, out.stderr
    with h5py.File(packed) as f:
        first = f["images"][0, 0, :2].reshape(-1).tolist()
    assert values(out) == first


def test_the_config_schema_takes_exactly_the_codecs_there_are_and_each_has_a_decoder():
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    assert schema["$defs"]["compression"]["enum"] == list(COMPRESSIONS)
    for name in COMPRESSIONS[1:]:
        with h5py.File("in-memory.h5", "w", driver="core", backing_store=False) as f:
            ds = f.create_dataset("x", (2, 8), np.uint8, chunks=(1, 8), **create_args(name))
            assert decoder_of(ds) is not None, name


def test_block_spans_cover_rows_stored_back_to_back_and_nothing_else():
    """A block's byte range is read ahead whole only when its rows lie back to back in one file."""
    from imgshard.read.snapshot import Layout

    offset = np.array([100, 110, 125, 500, 510, -1, -1, 0, 10], np.int64)
    size = np.array([10, 15, 5, 10, 10, 0, 0, 10, 10], np.int64)
    file_of = np.array([0, 0, 0, 0, 0, 0, 0, 1, 1], np.int32)
    layout = Layout(["a", "b"], file_of, np.arange(9), offset, size, size > 10, {}, 30)
    blocks = [(0, 3), (1, 2), (2, 2), (3, 2), (5, 2), (4, 1), (6, 2), (7, 2)]
    assert layout.spans(blocks) == [(0, 100, 30), (0, 110, 20), None, (0, 500, 20), None, (0, 510, 10), None, (1, 0, 20)]
    assert not layout.plain and Layout(["a"], file_of[:2], np.arange(2), offset[:2], size[:2], np.zeros(2, bool), {}, 10).plain
