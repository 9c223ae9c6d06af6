"""Training while the data grows: readers in processes of their own read continuously while the real
snakemake reruns through every kind of change, and never see a zero, a torn row or an error; old
snapshots go once no reader holds them, and stay while one does."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from imgshard.pixels.decode import decode_into, place_masks
from imgshard.pixels.geometry import Geometry
from tests.conftest import REPO, make_images, snakemake, wait_until, write_image
from tests.images import CLASSES, encode, random_masks, write_clouds_csv
from tests.snapshot_reader import KINDS, digest, label_of

SIZE = (120, 160)
SMALL = (60, 80)


def record(truth: dict, images: Path, rel: str) -> None:
    """The pixels of the file now at ``rel``, at both sizes the test builds, by the pipeline's own decoder,
    its label, and its masks' digest at both sizes (its masks placed as the pipeline places them)."""
    path = images / rel
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    entry = {"label": label_of(rel)}
    for shape, resize in ((SIZE, None), (SMALL, "stretch")):
        row = np.empty((*shape, 3), np.uint8)
        geometry = Geometry(*shape, resize=resize, reducing_gap=2.0 if resize else None)
        error = decode_into(str(path), row, geometry).error
        if error is None:
            entry[f"{shape[0]}x{shape[1]}"] = digest(row)
            masks = np.empty((*shape, len(CLASSES)), np.uint8)
            assert place_masks(tuple(encode(m) for m in masks_of(rel).transpose(2, 0, 1)), SIZE, masks, geometry) is None
            entry[f"masks {shape[0]}x{shape[1]}"] = digest(masks)
    truth[f"{rel} {sha256}"] = entry


def masks_of(rel: str) -> np.ndarray:
    """The masks every version of ``rel`` has, at its full size."""
    return random_masks(int.from_bytes(hashlib.blake2b(rel.encode()).digest()[:4], "little"), *SIZE)


def write_labels(images: Path, csv: Path, kind: str) -> None:
    """A class (or masks) for every image now in ``images`` (each path's own, whatever its version)."""
    rels = sorted(p.relative_to(images).as_posix() for p in images.rglob("*.jpg"))
    if kind == "masks":
        write_clouds_csv(csv, {r: masks_of(r) for r in rels})
    else:
        csv.write_text("path,label\n" + "".join(f"{r},{'abc'[label_of(r)]}\n" for r in rels))


class Readers:
    """One process of each kind, reading ``dataset`` until stopped."""

    def __init__(self, tmp: Path, dataset: Path, truth: dict):
        self.tmp, self.stop = tmp, tmp / "stop"
        self.truth = tmp / "truth.json"
        self.truth.write_text(json.dumps(truth))
        self.procs = {
            kind: subprocess.Popen(
                [sys.executable, "-m", "tests.snapshot_reader", kind, str(dataset), str(self.truth), str(self.stop), str(tmp / f"{kind}.json")],
                cwd=REPO,
            )
            for kind in KINDS
        }

    def wait_until_each_has_read(self, snapshot: str, kinds=KINDS, timeout: float = 120) -> None:
        """Until every reader of ``kinds`` has opened ``snapshot`` (each says so in its .seen file)."""
        for kind in kinds:
            seen = self.tmp / f"{kind}.json.seen"

            def opened(kind=kind, seen=seen) -> bool:
                assert self.procs[kind].poll() is None, f"{kind} reader died"
                return seen.exists() and snapshot in seen.read_text().split()

            wait_until(opened, f"the {kind} reader opening {snapshot}", timeout)

    def finish(self) -> dict:
        self.stop.touch()
        results = {}
        for kind, proc in self.procs.items():
            assert proc.wait(timeout=120) == 0
            results[kind] = json.loads((self.tmp / f"{kind}.json").read_text())
        return results


def current_snapshot(dataset: Path) -> str:
    with h5py.File(dataset) as f:
        return f.attrs["snapshot"]


@pytest.mark.parametrize("gather, kind, compression", [("virtual", "labels", "none"), ("copy", "masks", "none"), ("virtual", "masks", "lz4")])
def test_readers_see_their_snapshot_through_every_kind_of_rerun(tmp_path, gather, kind, compression):
    images, work = tmp_path / "images", tmp_path / "work"
    work.mkdir()
    rels = make_images(images, 40, *SIZE)
    # Every version of every image the reruns below make, recorded before any reader starts.
    staged = tmp_path / "staged"
    write_image(staged / "img0005.jpg", 9005, *SIZE)
    write_image(staged / "sub/added.jpg", 9006, *SIZE)
    truth: dict = {}
    for rel in rels:
        record(truth, images, rel)
    for rel in ("img0005.jpg", "sub/added.jpg"):
        record(truth, staged, rel)
    labels = tmp_path / "labels.csv"
    config = dict(images_dir=images, shards=2, gather=gather, labels=labels, compression=compression)

    def run(check=True, **changed):
        write_labels(images, labels, kind)  # a class (masks) for exactly the images there now
        return snakemake(work, check=check, **{**config, **changed})

    run()
    dataset = work / "results/dataset.h5"
    first = current_snapshot(dataset)
    readers = Readers(tmp_path, dataset, truth)
    readers.wait_until_each_has_read(first)  # every reader holds the first snapshot before anything changes

    shutil.copy(staged / "img0005.jpg", images / "img0005.jpg")  # changed
    run()
    shutil.copy(staged / "sub/added.jpg", images / "sub/added.jpg")  # added
    run()
    os.unlink(images / "img0007.jpg")  # removed
    run()
    run(image_size=f"[{SMALL[0]},{SMALL[1]}]")  # every pixel changes
    (images / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")  # a run that fails midway, resharding
    failed = run(check=False, shards=3)
    assert failed.returncode != 0 and "could not be stored" in failed.stdout
    (images / "broken.jpg").unlink()
    run(shards=3)  # every image moves to another shard
    last = current_snapshot(dataset)
    readers.wait_until_each_has_read(last, kinds=["dataset", "loader", "loader-block", "batches"])  # the ones that reopen
    results = readers.finish()

    for kind, result in results.items():
        assert result["errors"] == [], f"{kind}: {result['errors']}"
        assert result["bad"] == 0, f"{kind}: {result['bad']} bad rows of {result['rows']}: {result['examples']}"
        assert result["rows"] > 100, f"{kind} read only {result['rows']} rows"
        assert result["snapshots"][0] == first, kind
    # The plain h5py reader held the first snapshot throughout: it stayed in its folder, and read whole.
    assert results["h5py-hold"]["snapshots"] == [first] and results["h5py-hold"]["held_gone"] == 0
    for kind in ("dataset", "loader", "loader-block", "batches"):  # they moved on, through snapshots in publishing order
        assert len(results[kind]["snapshots"]) >= 2 and results[kind]["snapshots"][-1] == last, kind
    with h5py.File(dataset) as f:
        assert len(f["paths"]) == 40 and f["images"].shape[1:3] == SIZE


def shard_folder_files(work: Path) -> dict[str, list[str]]:
    shards = work / "results/dataset.shards"
    return {kind: sorted(p.name for p in (shards / kind).glob("*.h5")) for kind in ("snapshots", "parts")}


def test_old_snapshots_go_once_no_reader_holds_them_and_stay_while_one_does(tmp_path):
    images, work = tmp_path / "images", tmp_path / "work"
    work.mkdir()
    rels = make_images(images, 12)
    config = dict(images_dir=images, shards=2, workers=1)
    snakemake(work, **config)
    dataset = work / "results/dataset.h5"
    first = shard_folder_files(work)
    assert len(first["snapshots"]) == 1 and len(first["parts"]) == 2

    # A reader holds the first snapshot (plain h5py, reading through the virtual dataset) for a while.
    holder = subprocess.Popen(
        [sys.executable, "-c", "import h5py, sys; f = h5py.File(sys.argv[1]); f['images'][0]; print('open', flush=True); sys.stdin.read(); print(int(f['images'][()].any(axis=(1, 2, 3)).all()))", str(dataset)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "open"
    for k in range(4):
        write_image(images / rels[k], seed=700 + k)
        snakemake(work, **config)
    held = shard_folder_files(work)
    assert first["snapshots"][0] in held["snapshots"] and set(first["parts"]) <= set(held["parts"])
    assert len(held["snapshots"]) == 2  # the held one and the current one: the three between went
    holder.stdin.close()
    assert holder.stdout.read().strip() == "1"  # every row it read after all those reruns: none zeros
    assert holder.wait(timeout=30) == 0

    write_image(images / rels[11], seed=799)
    snakemake(work, **config)  # no reader now: the next run removes the old snapshot and its parts
    after = shard_folder_files(work)
    assert len(after["snapshots"]) == 1
    assert first["snapshots"][0] not in after["snapshots"]
    # Ten reruns later with no reader open: one snapshot's files, no more.
    for k in range(10):
        write_image(images / rels[k], seed=800 + k)
        snakemake(work, **config)
    final = shard_folder_files(work)
    assert len(final["snapshots"]) == 1
    with h5py.File(dataset) as f:
        mapped = {os.path.basename(vs.file_name) for vs in f["images"].virtual_sources()}
    assert set(final["parts"]) == mapped
    assert os.path.samefile(dataset, work / "results/dataset.shards/snapshots" / final["snapshots"][0])


def test_keep_snapshots_keeps_that_many_superseded_ones(tmp_path):
    images, work = tmp_path / "images", tmp_path / "work"
    work.mkdir()
    rels = make_images(images, 6)
    for k in range(4):
        write_image(images / rels[0], seed=900 + k)
        snakemake(work, images_dir=images, shards=1, keep_snapshots=2)
    assert len(shard_folder_files(work)["snapshots"]) == 3
    with h5py.File(work / "results/dataset.h5") as f:
        assert f["images"][()].any(axis=(1, 2, 3)).all()


def test_a_deleted_dataset_file_is_published_again(tmp_path):
    images, work = tmp_path / "images", tmp_path / "work"
    work.mkdir()
    make_images(images, 4)
    snakemake(work, images_dir=images, shards=1)
    (work / "results/dataset.h5").unlink()
    proc = snakemake(work, images_dir=images, shards=1)
    assert "rule gather" in proc.stdout and "rule decode_shard" not in proc.stdout
    with h5py.File(work / "results/dataset.h5") as f:
        assert len(f["paths"]) == 4


def test_a_run_with_nothing_to_do_removes_a_snapshot_its_reader_let_go_of(tmp_path):
    images, work = tmp_path / "images", tmp_path / "work"
    work.mkdir()
    rels = make_images(images, 6)
    config = dict(images_dir=images, shards=1)
    snakemake(work, **config)
    dataset = work / "results/dataset.h5"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import h5py, sys; f = h5py.File(sys.argv[1]); print('open', flush=True); sys.stdin.read()", str(dataset)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "open"
    held = current_snapshot(dataset)
    write_image(images / rels[0], seed=501)
    snakemake(work, **config)  # a new snapshot; the held one stays
    assert len(shard_folder_files(work)["snapshots"]) == 2
    holder.stdin.close()
    assert holder.wait(timeout=30) == 0

    proc = snakemake(work, **config)  # nothing to rebuild: the released snapshot goes all the same
    assert "Nothing to be done" in proc.stdout
    assert "imgshard: results/dataset.h5: removed 1 snapshots no reader holds any more" in proc.stdout
    left = shard_folder_files(work)
    assert left["snapshots"] == [os.path.basename(current_snapshot(dataset))] and os.path.basename(held) not in left["snapshots"]
    with h5py.File(dataset) as f:
        mapped = {os.path.basename(vs.file_name) for vs in f["images"].virtual_sources()}
    assert set(left["parts"]) == mapped  # the parts only the released snapshot mapped went with it
