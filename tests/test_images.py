"""Real-world images: every format stored as cv2 reads it, broken files caught, sizes and resizing."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from imgshard.build.shard import ShardJob, build_shard
from imgshard.errors import ImgshardError
from imgshard.pixels.geometry import Geometry, box_reduce, reduced_size
from imgshard.pixels.header import header_of
from tests.conftest import make_images, read_dataset, read_shard, reference_pixels, snakemake
from tests.images import broken_files, every_format, exif_rotated_jpeg, exif_rotated_webp, png_with_size, smooth_rgb, write

import cv2


def decode_one(path, geometry, tmp_path, **kw):
    out = tmp_path / f"{path.name}.h5"
    build_shard(ShardJob([str(path)], [path.name], str(out), geometry, workers=1, **kw))
    shard = read_shard(out)
    return shard["images"][0], tuple(shard["original_size"][0])


FORMATS = [
    "jpeg", "progressive jpeg", "grayscale jpeg", "png", "grayscale png", "rgba png",
    "16-bit png", "tiff", "webp", "lossy webp", "rgba webp", "bmp", "cmyk jpeg", "png named .jpg",
]  # fmt: skip


@pytest.fixture(scope="module")
def formats(tmp_path_factory):
    return every_format(tmp_path_factory.mktemp("formats"))


@pytest.mark.parametrize("kind", FORMATS)
def test_every_format_is_stored_as_cv2_reads_it(formats, tmp_path, kind):
    path = formats[kind]
    expected = cv2.imread(str(path), cv2.IMREAD_COLOR_RGB)
    assert expected.shape == (30, 40, 3)
    stored, size = decode_one(path, Geometry(30, 40), tmp_path)
    np.testing.assert_array_equal(stored, expected)
    assert size == (30, 40)


def test_images_whose_alpha_channel_is_left_out_are_named(formats, tmp_path):
    """Rows are RGB: the shard job names the files whose alpha it dropped (an RGBA PNG, a WebP with
    alpha, a lossless one too), and no other."""
    rgba = np.dstack([cv2.cvtColor(cv2.imread(str(formats["png"])), cv2.COLOR_BGR2RGB), np.full((30, 40), 7, np.uint8)])
    extra = {"lossless rgba webp": write(tmp_path / "lossless_alpha.webp", rgba, [cv2.IMWRITE_WEBP_QUALITY, 101])}
    paths = [formats[k] for k in FORMATS] + list(extra.values())
    result = build_shard(ShardJob([str(p) for p in paths], [p.name for p in paths], str(tmp_path / "s.h5"), Geometry(30, 40), workers=1))
    assert sorted(result.alpha_dropped) == ["alpha.png", "alpha.webp", "lossless_alpha.webp"]


def test_the_shard_log_and_stats_count_the_dropped_alpha_channels(formats, tmp_path, workdir):
    images = tmp_path / "images"
    images.mkdir()
    for kind in ("rgba png", "jpeg", "png"):
        shutil.copy(formats[kind], images / formats[kind].name)
    snakemake(workdir, images_dir=images, shards=1, image_size="[30,40]")
    log = (workdir / "logs/decode_shard/dataset/000.log").read_text()
    assert "alpha: 1 image had an alpha channel, left out (rows are RGB): alpha.png" in log
    assert json.loads((workdir / "results/dataset.shards/shard-000.json").read_text())["alpha_dropped"] == 1


@pytest.mark.parametrize("kind", ["webp", "lossy webp", "rgba webp", "png", "bmp", "jpeg"])
def test_headers_give_the_size_cv2_decodes(formats, kind):
    assert header_of(str(formats[kind])).size == (30, 40)


def test_an_exif_rotated_webp_is_stored_as_cv2_reads_it(tmp_path):
    """OpenCV turns a WebP by its EXIF chunk, which comes after the pixels: the header must say so too."""
    path = exif_rotated_webp(tmp_path / "turned.webp", smooth_rgb(30, 40))
    expected = cv2.imread(str(path), cv2.IMREAD_COLOR_RGB)
    assert expected.shape == (40, 30, 3) and header_of(str(path)).size == (40, 30)
    stored, size = decode_one(path, Geometry(40, 30), tmp_path)
    np.testing.assert_array_equal(stored, expected)
    resized, size = decode_one(path, Geometry(20, 15, resize="stretch"), tmp_path)
    np.testing.assert_array_equal(resized, cv2.resize(expected, (15, 20), interpolation=cv2.INTER_AREA))
    assert size == (40, 30)


def test_mixed_formats_through_the_pipeline(formats, workdir):
    folder = next(iter(formats.values())).parent
    snakemake(workdir, images_dir=folder, shards=3)
    ds = read_dataset(workdir / "results/dataset.h5")
    assert sorted(ds["paths"]) == sorted(p.name for p in formats.values())
    for i, rel in enumerate(ds["paths"]):
        np.testing.assert_array_equal(ds["images"][i], reference_pixels(folder, rel), err_msg=rel)


# --- broken files -------------------------------------------------------------


@pytest.fixture
def broken(tmp_path):
    return broken_files(tmp_path / "images")


@pytest.mark.parametrize(
    "name",
    ["zero bytes", "not an image", "truncated jpeg", "truncated png", "enormous png header", "enormous jpeg header"],
)
def test_broken_file_is_never_stored(broken, tmp_path, name):
    path, reason = broken[name]
    out = tmp_path / "s.h5"
    with pytest.raises(ImgshardError) as e:
        build_shard(ShardJob([str(path)], [path.name], str(out), Geometry(48, 64), workers=1))
    assert f"{path.name}: " in str(e.value) and reason in str(e.value)
    assert not out.exists()


def test_on_error_fail_lists_every_broken_file_and_leaves_nothing(broken, workdir):
    images = broken["zero bytes"][0].parent
    make_images(images, 5)
    proc = snakemake(workdir, check=False, images_dir=images, shards=1)
    assert proc.returncode != 0
    assert f"shard 0: {len(broken)} of {len(broken) + 5} images could not be stored (on_error: fail)" in proc.stdout
    for path, reason in broken.values():
        assert f"{path.name}: " in proc.stdout and reason in proc.stdout
    assert not list(workdir.rglob("*.h5")) and not list(workdir.rglob("*.tmp-*"))


def test_on_error_skip_keeps_exactly_the_good_images(broken, workdir):
    images = broken["zero bytes"][0].parent
    good = make_images(images, 7)
    proc = snakemake(workdir, images_dir=images, shards=2, on_error="skip")
    assert f"{len(good)} images from 2 shards (virtual), {len(broken)} skipped" in proc.stdout
    ds = read_dataset(workdir / "results/dataset.h5")
    assert sorted(ds["paths"]) == sorted(good)
    for i, rel in enumerate(ds["paths"]):
        np.testing.assert_array_equal(ds["images"][i], reference_pixels(images, rel))
    skipped = dict(read_dataset(workdir / "results/dataset.h5")["skipped"])
    assert set(skipped) == {p.name for p, _ in broken.values()}
    for path, reason in broken.values():
        assert reason in skipped[path.name]


# --- sizes ----------------------------------------------------------------------


def test_stretch_shrinks_with_area_and_enlarges_with_linear(tmp_path):
    rgb = smooth_rgb(48, 64)
    path = write(tmp_path / "a.png", rgb)
    small, size = decode_one(path, Geometry(24, 32, resize="stretch"), tmp_path)
    np.testing.assert_array_equal(small, cv2.resize(rgb, (32, 24), interpolation=cv2.INTER_AREA))
    assert size == (48, 64)
    big, _ = decode_one(path, Geometry(96, 100, resize="stretch"), tmp_path)
    np.testing.assert_array_equal(big, cv2.resize(rgb, (100, 96), interpolation=cv2.INTER_LINEAR))


def test_letterbox_keeps_aspect_centred_and_pads(tmp_path):
    rgb = smooth_rgb(40, 80)
    path = write(tmp_path / "wide.png", rgb)
    out, size = decode_one(path, Geometry(40, 40, resize="letterbox", pad_value=17), tmp_path)
    assert (out[:10] == 17).all() and (out[30:] == 17).all()
    np.testing.assert_array_equal(out[10:30], cv2.resize(rgb, (40, 20), interpolation=cv2.INTER_AREA))
    assert size == (40, 80)


def test_center_crop_covers_and_crops_the_middle(tmp_path):
    rgb = smooth_rgb(40, 80)
    path = write(tmp_path / "wide.png", rgb)
    out, _ = decode_one(path, Geometry(40, 40, resize="center_crop"), tmp_path)
    np.testing.assert_array_equal(out, rgb[:, 20:60])
    out, _ = decode_one(path, Geometry(20, 20, resize="center_crop"), tmp_path)
    np.testing.assert_array_equal(out, cv2.resize(rgb[:, 20:60], (20, 20), interpolation=cv2.INTER_AREA))


# imread flags by JPEG reduction, as a reference decode that allocates its own array.
REDUCED_RGB = {
    1: cv2.IMREAD_COLOR_RGB,
    2: cv2.IMREAD_REDUCED_GRAYSCALE_2 | cv2.IMREAD_COLOR_RGB,
    4: cv2.IMREAD_REDUCED_GRAYSCALE_4 | cv2.IMREAD_COLOR_RGB,
}


def test_one_worker_resizing_image_after_image_stores_each_as_decoded_alone(formats, tmp_path):
    """A worker decodes every resized image into one scratch array it keeps: no image may see another's pixels.

    In turn: JPEGs reduced at 1/4 and 1/2, an EXIF-rotated one (which cv2 will not
    decode into an array of the stored shape), every format, and a PNG whose header
    gives the size of the PNG before it but whose pixels cannot be decoded.
    """
    geometry = Geometry(24, 32, resize="stretch")
    files = [write(tmp_path / "big.jpg", smooth_rgb(200, 300, seed=1)), write(tmp_path / "half.jpg", smooth_rgb(96, 128, seed=2))]
    exif_rotated_jpeg(tmp_path / "rotated.jpg", smooth_rgb(200, 300, seed=3))
    files += [tmp_path / "rotated.jpg", *formats.values(), write(tmp_path / "good.png", smooth_rgb(48, 64, seed=4))]
    files.append(png_with_size(tmp_path / "bad.png", 48, 64))
    result = build_shard(ShardJob([str(p) for p in files], [p.name for p in files], str(tmp_path / "s.h5"), geometry, workers=1, on_error="skip"))
    assert [p for p, _ in result.skipped] == ["bad.png"]
    assert [geometry.reduction(header_of(str(p)).size) for p in files[:3]] == [4, 2, 2]
    f = read_shard(tmp_path / "s.h5")
    for i, path in enumerate(files[:-1]):
        header = header_of(str(path))
        factor = geometry.reduction(header.size) if header.kind == "jpeg" else 1
        alone = cv2.imread(str(path), REDUCED_RGB[factor])
        expected = np.empty((24, 32, 3), np.uint8)
        geometry.place(alone, expected, tuple(f["original_size"][i]))
        np.testing.assert_array_equal(f["images"][i], expected, err_msg=path.name)


@pytest.mark.parametrize("kind", ["jpeg", "progressive jpeg", "grayscale jpeg", "cmyk jpeg", "odd size"])
@pytest.mark.parametrize("factor", [1, 2, 4, 8])
def test_jpegs_decoded_from_their_bytes_equal_cv2_imread(formats, tmp_path, kind, factor):
    """jpeg.py decodes upright JPEGs itself (libjpeg-turbo through simplejpeg): pixel for pixel what imread gives."""
    from imgshard.pixels.geometry import reduced_size
    from imgshard.pixels.jpeg import jpeg_into

    path = write(tmp_path / "odd.jpg", smooth_rgb(203, 301, seed=9)) if kind == "odd size" else formats[kind]
    header = header_of(str(path))
    dst = np.empty((*reduced_size(header.size, factor), 3), np.uint8)
    assert jpeg_into(path.read_bytes(), header, dst, factor)
    flags = cv2.IMREAD_REDUCED_GRAYSCALE_8 | cv2.IMREAD_COLOR_RGB if factor == 8 else REDUCED_RGB[factor]
    np.testing.assert_array_equal(dst, cv2.imread(str(path), flags))


def test_jpegs_cv2_must_rotate_or_diagnose_are_left_to_it(broken, tmp_path):
    from imgshard.pixels.jpeg import jpeg_into

    exif_rotated_jpeg(tmp_path / "rotated.jpg", smooth_rgb(20, 30))
    header = header_of(str(tmp_path / "rotated.jpg"))
    assert (header.orientation, header.size) == (6, (30, 20))
    assert not jpeg_into((tmp_path / "rotated.jpg").read_bytes(), header, np.empty((30, 20, 3), np.uint8), 1)
    # Turned 180 degrees keeps the shape, so only the orientation tells; upright with EXIF is decoded here.
    for orientation, taken in ((3, False), (1, True)):
        path = tmp_path / f"exif-{orientation}.jpg"
        exif_rotated_jpeg(path, smooth_rgb(20, 30, seed=orientation), orientation)
        dst = np.empty((20, 30, 3), np.uint8)
        assert jpeg_into(path.read_bytes(), header_of(str(path)), dst, 1) is taken
        stored, _ = decode_one(path, Geometry(20, 30), tmp_path)
        np.testing.assert_array_equal(stored, cv2.imread(str(path), cv2.IMREAD_COLOR_RGB))
    path = broken["truncated jpeg"][0]
    assert not jpeg_into(path.read_bytes(), header_of(str(path)), np.empty((48, 64, 3), np.uint8), 1)


@pytest.mark.parametrize("factor, target", [(2, (700, 1050)), (4, (350, 500)), (8, (160, 250))])
def test_fastest_reduced_jpeg_decode_stays_within_two_grey_levels(tmp_path, factor, target):
    from imgshard.tools.demo import cloud_image

    path = write(tmp_path / "cloud.jpg", cloud_image(7), [cv2.IMWRITE_JPEG_QUALITY, 90])
    geometry = Geometry(*target, resize="stretch", reducing_gap=1.0)
    assert geometry.reduction(header_of(str(path)).size) == factor
    out, size = decode_one(path, geometry, tmp_path)
    full = cv2.resize(cv2.imread(str(path), cv2.IMREAD_COLOR_RGB), target[::-1], interpolation=cv2.INTER_AREA)
    assert np.abs(out.astype(int) - full).mean() <= 2
    assert size == (1400, 2100)


# (width, height) of phone and camera photographs, as the reducing_gap issue measured them.
PHOTO_SIZES = [(1920, 1080), (2560, 1600), (4032, 3024), (5640, 3172)]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Photograph-like JPEGs with detail at every scale, one per size."""
    from imgshard.tools.demo import photo_image

    folder = tmp_path_factory.mktemp("photos")
    return {size: write(folder / f"{size[0]}x{size[1]}.jpg", photo_image(size[0], size[1], size[0]), [cv2.IMWRITE_JPEG_QUALITY, 92]) for size in PHOTO_SIZES}


def mean_difference_from_full_decode(path, geometry: Geometry, tmp_path) -> float:
    out, _ = decode_one(path, geometry, tmp_path)
    full = cv2.resize(cv2.imread(str(path), cv2.IMREAD_COLOR_RGB), geometry.shape[::-1], interpolation=cv2.INTER_AREA)
    return float(np.abs(out.astype(int) - full).mean())


@pytest.mark.parametrize("size", PHOTO_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_default_reducing_gap_stays_within_one_grey_level_on_photographs(photos, size, tmp_path):
    geometry = Geometry(384, 512, resize="stretch")  # the default reducing_gap, 2.0
    assert mean_difference_from_full_decode(photos[size], geometry, tmp_path) <= 1.0


@pytest.fixture(scope="module")
def large_photos(tmp_path_factory):
    """A lossy WebP and an RGBA PNG large enough that their decodes are block-averaged before the resize."""
    from imgshard.tools.demo import photo_image

    folder = tmp_path_factory.mktemp("large")
    rgb = photo_image(11, 3000, 3000)
    alpha = np.linspace(64, 255, 2560, dtype=np.uint8)[None, :].repeat(1600, 0)
    return {
        "webp": write(folder / "big.webp", rgb, [cv2.IMWRITE_WEBP_QUALITY, 90]),
        "png": write(folder / "screen.png", np.dstack([photo_image(12, 1600, 2560), alpha])),
    }


@pytest.mark.parametrize("target, factors", [((224, 224), {"webp": 3, "png": 1}), ((150, 200), {"webp": 3, "png": 2}), ((96, 128), {"webp": 5, "png": 4})])
@pytest.mark.parametrize("kind", ["webp", "png"])
def test_block_averaging_large_decodes_stays_within_one_grey_level(large_photos, tmp_path, target, factors, kind):
    """Formats without a scaled decode are averaged over whole blocks first, while twice the gap remains."""
    path = large_photos[kind]
    full = cv2.imread(str(path), cv2.IMREAD_COLOR_RGB)
    for resize in ("stretch", "letterbox", "center_crop"):
        geometry = Geometry(*target, resize=resize)
        out, size = decode_one(path, geometry, tmp_path)
        if resize == "stretch":
            k = geometry.box_factor(full.shape[:2])
            assert k == factors[kind]
            averaged = box_reduce(full, k, np.empty((*reduced_size(full.shape[:2], k), 3), np.uint8)) if k > 1 else full
            np.testing.assert_array_equal(out, cv2.resize(averaged, target[::-1], interpolation=cv2.INTER_AREA))
        reference = np.empty_like(out)
        Geometry(*target, resize=resize, reducing_gap=None).place(full, reference, full.shape[:2])
        assert np.abs(out.astype(int) - reference).mean() <= 1.0, resize
        assert size == full.shape[:2]


@pytest.mark.parametrize("height, width, k", [(4, 6, 2), (23, 37, 4), (1, 9, 3), (30, 30, 5), (7, 5, 8)])
def test_block_averages_are_the_rounded_mean_of_every_block_whole_or_cut_short(height, width, k):
    src = np.random.default_rng(k).integers(0, 256, (height, width, 3), dtype=np.uint8)
    out = box_reduce(src, k, np.empty((*reduced_size((height, width), k), 3), np.uint8))
    means = [[src[i : i + k, j : j + k].reshape(-1, 3).mean(0) for j in range(0, width, k)] for i in range(0, height, k)]
    assert np.abs(out - np.array(means)).max() <= 0.5  # OpenCV breaks ties either way


def test_block_factor_keeps_twice_the_gap_on_every_axis():
    assert Geometry(384, 512, resize="stretch").box_factor((4096, 4096)) == 2  # 2048 >= 4 x 512
    assert Geometry(384, 512, resize="stretch").box_factor((4096, 4095)) == 1
    assert Geometry(384, 512, resize="letterbox").box_factor((4096, 4096)) == 2
    assert Geometry(100, 100, resize="stretch", reducing_gap=1.0).box_factor((1000, 1000)) == 5
    assert Geometry(100, 100, resize="stretch", reducing_gap=None).box_factor((1000, 1000)) == 1
    assert Geometry(350, 525, resize="stretch").box_factor((700, 1050)) == 1  # a Clouds image decoded at 1/2


def test_reducing_all_the_way_would_cost_more_than_a_grey_level_on_these_photographs(photos, tmp_path):
    """What the default protects against: without a gap, the largest photo is decoded at 1/8 and ends far off."""
    path = photos[(5640, 3172)]
    assert Geometry(384, 512, resize="stretch", reducing_gap=1.0).reduction(header_of(str(path)).size) == 8
    assert mean_difference_from_full_decode(path, Geometry(384, 512, resize="stretch", reducing_gap=1.0), tmp_path) > 1.0


def test_reduction_needs_every_axis_small_enough():
    def reduction(height, width, resize="stretch"):
        return Geometry(height, width, resize=resize, reducing_gap=1.0).reduction((1400, 2100))

    assert reduction(700, 1050) == 2
    assert reduction(701, 1050) == 1
    assert reduction(100, 1050) == 2
    # letterbox scales by the smaller factor, center_crop by the larger
    assert reduction(350, 2100, "letterbox") == 4
    assert reduction(350, 2100, "center_crop") == 1


def test_reducing_gap_keeps_the_decode_that_many_times_the_target():
    size = (1400, 2100)
    assert Geometry(350, 525, resize="stretch").reduction(size) == 2  # the default gap: 700x1050 >= 2x
    assert Geometry(351, 525, resize="stretch").reduction(size) == 1
    assert Geometry(175, 262, resize="stretch").reduction(size) == 4
    assert Geometry(350, 525, resize="stretch", reducing_gap=1.0).reduction(size) == 4
    assert Geometry(175, 262, resize="stretch", reducing_gap=3.0).reduction(size) == 2
    assert Geometry(10, 10, resize="stretch", reducing_gap=None).reduction(size) == 1


def test_resizing_through_the_pipeline_records_how(tmp_path, workdir):
    images = tmp_path / "images"
    make_images(images, 4, height=48, width=64)
    make_images(images / "other", 3, height=30, width=90, seed=1)
    snakemake(workdir, images_dir=images, shards=2, image_size="[32,32]", resize="letterbox", pad_value=5)
    ds = read_dataset(workdir / "results/dataset.h5")
    assert ds["images"].shape == (7, 32, 32, 3)
    assert ds["attrs"]["resize"] == "letterbox"
    sizes = dict(zip(ds["paths"], map(tuple, ds["original_size"])))
    assert sizes["img0001.jpg"] == (48, 64) and sizes["other/img0001.jpg"] == (30, 90)
    wide = ds["images"][ds["paths"].index("other/img0001.jpg")]
    assert (wide[:2] == 5).all()  # 30x90 in 32x32: an 11-pixel-high band, padded above and below


# --- shared memory --------------------------------------------------------------


def test_jobs_side_by_side_share_the_shm_budget(tmp_path, workdir):
    """/dev/shm is the machine's: two one-worker jobs on 2 cores hold at most half of shm_budget_mb each."""
    images = tmp_path / "images"
    make_images(images, 40, height=256, width=256)  # 0.19 MB a row
    snakemake(workdir, images_dir=images, shards=2, shm_budget_mb=2)  # --cores 2, workers auto: 1 a job
    logs = [p.read_text() for p in sorted((workdir / "logs/decode_shard/dataset").glob("*.log"))]
    # 1 MB each: two buffers of two rows (the whole 2 MB would give 5 rows each)
    assert len(logs) == 2 and all("(1 workers, 2 x 2-image buffers; a fresh part)" in log for log in logs)
    ds = read_dataset(workdir / "results/dataset.h5")
    for i, rel in enumerate(ds["paths"]):
        np.testing.assert_array_equal(ds["images"][i], reference_pixels(images, rel), err_msg=rel)
