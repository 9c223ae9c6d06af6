"""The benchmark runs end to end on a handful of tiny images, so it cannot rot. No timing is asserted."""

from __future__ import annotations

import json

from benchmarks.bench import main


def test_benchmark_smoke(tmp_path):
    out = tmp_path / "out"
    results = main(
        ["--count", "4", "--height", "40", "--width", "60", "--rounds", "1", "--shards", "2"]
        + ["--scale", "40:2", "--photos", "1", "--data", str(tmp_path / "data"), "--out", str(out)]
        + ["--resized", "4", "--reruns", "4", "--mixed", "1", "--mixed-scale", "0.05"]
        + ["--read-count", "8", "--open-rows", "40", "--read-seconds", "0", "--read-clouds", "0"]
    )
    assert set(results["contenders"]) == {"serial", "pool", "pipeline", "incremental", "limit"}
    assert results["pipeline_time_split"]["startup"] > 0 and results["pipeline_time_split"]["write"] > 0
    assert [w["workers"] for w in results["workers_sweep"]] == list(range(1, results["setup"]["cores"] + 1))
    assert [s["images"] for s in results["scale"]] == [40]
    assert results["scale"][0]["one_changed_shard_jobs"] == 1
    assert set(results["reducing_gap"]["gaps"]) == {"null", "1.0", "2.0"} and results["reducing_gap"]["photos"] == 4
    around = results["overhead"]
    assert [x["images"] for x in around["resized"]] == [4] and around["photos"]["images"] == 6
    assert {"jpg_mean", "png_mean", "webp_mean", "max"} == set(around["photos"]["grey_levels"])
    assert around["resized"][0]["pipeline_gap_1"] > 0 and "that / limit |" in (out / "results.md").read_text()
    assert around["resized"][0]["limit_imread"] > 0 and "| limit with imread |" in (out / "results.md").read_text()
    assert [x["images"] for x in around["reruns"]] == [4] and around["write_bandwidth"]["plain_write_gb_s"] > 0
    assert [x["cores"] for x in around["estimate"]["rows"]][1:] == [16, 64]
    read = results["reading"]
    assert [x["set"] for x in read["sets"]] == ["224x224"]
    for x in read["sets"]:
        assert set(x["images_per_s"]) >= {"limit", "loader/copy", "loader/virtual", "dataloader/virtual", "jpeg_folder", "litdata"}
        assert all(v > 0 for v in x["images_per_s"].values())
    codecs = read["codecs"]
    assert set(codecs["bytes"]) == {"none", "lzf", "gzip", "lz4", "zstd"} and read["open"]["rows"] == 40
    assert all(codecs["images_per_s"][f"{c}/{u}"] > 0 for c in codecs["bytes"] for u in ("limit", "loader", "dataloader", "loader_cold"))
    assert min(codecs["bytes"].values()) < codecs["bytes"]["none"] and "| compression | MB |" in (out / "results.md").read_text()
    seg = read["segmentation"]
    assert set(seg["masks_over_alone"]) == {f"{k}/{m}" for k in ("loader", "dataloader") for m in ("copy", "virtual")}
    assert 1 < seg["bytes_ratio"] < 1.5 and "The segmentation feed" in (out / "results.md").read_text()
    assert "| `imgshard.Loader` |" in (out / "results.md").read_text()
    big = read["bigger_than_memory"][0]
    assert big["set"] == "224x224" and set(big["share_of_sequential"]) >= {"file_read_1", "loader_in_order", "loader_block_4mib", "dataloader_block"}
    assert big["mixing"]["block"]["labels"] > 0 and "Bigger than memory" in (out / "results.md").read_text()
    # build, reducing_gap, resized, photos, reruns, reading, segmentation, codecs, bigger than memory
    assert len(results["targets"]) == 4 + 1 + 2 + 2 + 3 + 5 + 5 + 10 + 4
    assert json.loads((out / "results.json").read_text()) == results
    assert "| pipeline |" in (out / "results.md").read_text() and "| reducing_gap |" in (out / "results.md").read_text()
    assert "| one changed | one added | one removed |" in (out / "results.md").read_text()
    for chart in ("speed.png", "workers.png"):
        assert (out / chart).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
