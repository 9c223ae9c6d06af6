"""decode_shard called directly: batches, both buffers, every start method, the shard it writes."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest

from imgshard.build.shard import ShardJob, build_shard
from imgshard.errors import ImgshardError
from imgshard.pixels.geometry import Geometry
from tests.conftest import make_images, read_shard, reference_pixels
from tests.images import exif_rotated_jpeg


@pytest.fixture(scope="module")
def big_images(tmp_path_factory):
    """12 images of 512x512 (768 KiB decoded each), so a 3 MB budget means batches of two."""
    folder = tmp_path_factory.mktemp("big")
    return folder, make_images(folder, 12, height=512, width=512)


# Not fork: this test process has run OpenCV, whose thread pool a forked child
# inherits locked (see imgshard.build.workers.mp_context); the fork path is tested
# through snakemake, whose job process runs no OpenCV before starting workers.
@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
def test_batches_through_two_buffers_give_exact_pixels(big_images, tmp_path, start_method):
    folder, rels = big_images
    out = tmp_path / "shard.h5"
    result = build_shard(ShardJob(
        [str(folder / r) for r in rels], rels, str(out), Geometry(512, 512), workers=2, shm_budget_mb=3, start_method=start_method
    ))
    # 3 MB holds 4 images: two buffers of two, so six batches with writing overlapping decoding.
    assert (result.buffers, result.buffer_rows) == (2, 2)
    shard = read_shard(out)
    assert shard["paths"] == rels
    assert shard["chunks"] is None  # contiguous: a reader finds a row by arithmetic
    for i, rel in enumerate(rels):
        np.testing.assert_array_equal(shard["images"][i], reference_pixels(folder, rel), err_msg=rel)


def test_empty_shard_writes_an_index_and_no_part(tmp_path):
    result = build_shard(ShardJob([], [], str(tmp_path / "s.h5"), Geometry(8, 8)))
    assert result.paths == []
    shard = read_shard(tmp_path / "s.h5")
    assert shard["paths"] == [] and shard["index"].parts == []
    assert not (tmp_path / "parts").exists()


def test_broken_file_fails_the_shard_listing_every_one(tmp_path):
    rels = make_images(tmp_path, 6)
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image at all")
    rels += ["empty.jpg", "text.png"]
    out = tmp_path / "shard.h5"
    with pytest.raises(ImgshardError) as e:
        build_shard(ShardJob([str(tmp_path / r) for r in rels], rels, str(out), Geometry(48, 64), workers=2))
    message = str(e.value)
    assert "2 of 8 images could not be stored" in message
    assert "empty.jpg: empty file (0 bytes)" in message
    assert "text.png: not a decodable image" in message
    assert not out.exists() and not list(tmp_path.rglob("*.tmp-*")) and not list(tmp_path.glob("parts/*"))


def test_skip_keeps_exactly_the_good_images_in_order(tmp_path):
    rels = make_images(tmp_path, 9)
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 broken")
    rels.insert(4, "bad.jpg")
    out = tmp_path / "shard.h5"
    result = build_shard(ShardJob(
        [str(tmp_path / r) for r in rels], rels, str(out), Geometry(48, 64), workers=2, on_error="skip", shm_budget_mb=1
    ))
    assert [p for p, _ in result.skipped] == ["bad.jpg"]
    good = [r for r in rels if r != "bad.jpg"]
    shard = read_shard(out)
    assert shard["paths"] == good
    for i, rel in enumerate(good):
        np.testing.assert_array_equal(shard["images"][i], reference_pixels(tmp_path, rel), err_msg=rel)


def test_exif_rotated_image_is_stored_as_cv2_shows_it(tmp_path):
    rgb = np.zeros((40, 60, 3), np.uint8)
    rgb[:10, :20] = (255, 0, 0)
    exif_rotated_jpeg(tmp_path / "rot.jpg", rgb)
    upright = reference_pixels(tmp_path, "rot.jpg")
    assert upright.shape == (60, 40, 3)  # cv2 applied the rotation
    build_shard(ShardJob([str(tmp_path / "rot.jpg")], ["rot.jpg"], str(tmp_path / "s.h5"), Geometry(60, 40)))
    shard = read_shard(tmp_path / "s.h5")
    np.testing.assert_array_equal(shard["images"][0], upright)
    assert tuple(shard["original_size"][0]) == (60, 40)


def test_image_whose_corners_look_like_the_decode_marks_is_stored_exactly(tmp_path):
    import cv2

    rgb = np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    rgb[0, 0] = (1, 254, 3)
    rgb[-1, -1] = (252, 5, 250)
    cv2.imwrite(str(tmp_path / "m.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    build_shard(ShardJob([str(tmp_path / "m.png")], ["m.png"], str(tmp_path / "s.h5"), Geometry(30, 40)))
    np.testing.assert_array_equal(read_shard(tmp_path / "s.h5")["images"][0], rgb)


def test_undecodable_file_after_a_good_one_is_not_stored_with_stale_pixels(tmp_path):
    """imread(dst) leaves dst as it was, and says nothing, when it cannot decode a TIFF cut short: the row
    would hold the image decoded there before. Such a TIFF gets past every check before the decode (a
    TIFF's end has no marker to miss), into a buffer row that held another image (one-row buffers, in turn)."""
    rels = make_images(tmp_path, 2, height=512, width=512)
    tiff = tmp_path / "cut.tiff"
    cv2.imwrite(str(tiff), cv2.imread(str(tmp_path / rels[0])))
    data = tiff.read_bytes()[: tiff.stat().st_size * 2 // 3]
    tiff.write_bytes(data)
    from imgshard.pixels.header import problem, read_header

    assert problem(data, read_header(io.BytesIO(data))) is None  # the checks before the decode pass it on
    rels.append("cut.tiff")  # third: into the buffer row the first image was decoded into
    result = build_shard(ShardJob(
        [str(tmp_path / r) for r in rels], rels, str(tmp_path / "s.h5"), Geometry(512, 512), workers=1, on_error="skip", shm_budget_mb=2
    ))
    assert (result.buffers, result.buffer_rows) == (2, 1)
    assert result.paths == rels[:2] and result.skipped == [("cut.tiff", "not a decodable image")]
    shard = read_shard(tmp_path / "s.h5")
    for i, rel in enumerate(rels[:2]):
        np.testing.assert_array_equal(shard["images"][i], reference_pixels(tmp_path, rel))
