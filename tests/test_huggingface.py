"""Read by the libraries people already use: Hugging Face datasets' own HDF5 loader takes a copied dataset
as it is (every HDF5 dataset a column of one row per image), and a virtual one once exported."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from datasets import load_dataset

from imgshard.tools.cli import main
from tests.conftest import make_images, reference_pixels, snakemake
from tests.images import CLASSES


@pytest.mark.parametrize("gather", ["copy", "virtual"])
def test_load_dataset_hdf5_reads_pixels_paths_and_labels(tmp_path, workdir, gather):
    images = tmp_path / "images"
    rels = make_images(images, 6)
    (images / "broken.jpg").write_bytes(b"")  # skipped: listed in an attribute, no column of another length
    names = {rel: ["cat", "ant"][i % 2] for i, rel in enumerate(rels + ["broken.jpg"])}
    (tmp_path / "labels.csv").write_text("path,label\n" + "".join(f"{r},{c}\n" for r, c in names.items()))
    snakemake(workdir, images_dir=images, labels=tmp_path / "labels.csv", shards=2, gather=gather, on_error="skip")
    path = workdir / "results/dataset.h5"
    if gather == "virtual":  # the loader refuses a file whose rows live elsewhere: export a copy first
        assert main(["export", str(path), str(tmp_path / "copy.h5")]) == 0
        path = tmp_path / "copy.h5"
    ds = load_dataset("hdf5", data_files=str(path), split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert set(ds.column_names) == {"images", "paths", "sha256", "original_size", "labels"}
    assert len(ds) == 6
    with h5py.File(path) as f:
        classes = [str(c) for c in f["labels"].attrs["classes"]]
    for row in ds:
        rel = row["paths"] if isinstance(row["paths"], str) else row["paths"].decode()
        np.testing.assert_array_equal(np.asarray(row["images"], np.uint8), reference_pixels(images, rel))
        assert classes[row["labels"]] == names[rel]


@pytest.mark.parametrize("gather", ["copy", "virtual"])
def test_load_dataset_hdf5_reads_masks_that_unpack_to_their_run_lengths(clouds, tmp_path, workdir, gather):
    """Masks are a column of packed bits: numpy.unpackbits, as the README says, gives each image's own masks."""
    images, csv, truth = clouds
    snakemake(workdir, images_dir=images, labels=csv, shards=2, gather=gather)
    path = workdir / "results/dataset.h5"
    if gather == "virtual":
        assert main(["export", str(path), str(tmp_path / "copy.h5")]) == 0
        path = tmp_path / "copy.h5"
    ds = load_dataset("hdf5", data_files=str(path), split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert set(ds.column_names) == {"images", "mask_bits", "paths", "sha256", "original_size"}
    with h5py.File(path) as f:
        h, w, k = (int(x) for x in f["mask_bits"].attrs["mask_shape"])
        assert list(f["mask_bits"].attrs["classes"]) == CLASSES and (h, w, k) == (48, 64, len(CLASSES))
    assert len(ds) == len(truth)
    for row in ds:
        rel = row["paths"] if isinstance(row["paths"], str) else row["paths"].decode()
        bits = np.asarray(row["mask_bits"], np.uint8)
        masks = np.unpackbits(bits, count=h * w * k, bitorder="little").reshape(h, w, k)
        np.testing.assert_array_equal(masks, truth[rel], err_msg=rel)
        np.testing.assert_array_equal(np.asarray(row["images"], np.uint8), reference_pixels(images, rel))
