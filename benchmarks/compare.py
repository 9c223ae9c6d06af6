"""Two checkouts' ``make bench`` results side by side: the figures a code change must not make worse.

    python -m benchmarks.compare BEFORE.json [BEFORE.json ...] -- AFTER.json [AFTER.json ...] > table.md

Each side may have several runs (alternated with the other side's on one
machine); a cell is the median of a side's runs, and the ratio after/before
(for times lower is better, for images/s higher).
"""

from __future__ import annotations

import json
import statistics
import sys


def figures(r: dict) -> dict[str, tuple[float, str]]:
    """(value, unit) of each figure worth comparing in one results.json."""
    out = {}
    c = r["contenders"]
    out["build, full size (pipeline)"] = (c["pipeline"]["seconds"], "s")
    out["rerun, one image changed (incremental)"] = (c["incremental"]["seconds"], "s")
    for row in r["overhead"]["resized"]:
        out[f"build {row['images']} resized to 350x525"] = (row["pipeline"], "s")
    for row in r["overhead"]["reruns"]:
        for kind in ("noop", "changed", "added", "removed"):
            out[f"rerun {kind}, {row['images']} images"] = (row[kind], "s")
    for row in r["scale"]:
        n = f"{row['images']:,}"
        out[f"build {n} tiny images"] = (row["build_seconds"], "s")
        out[f"no-op at {n}"] = (row["noop_seconds"], "s")
        out[f"one changed at {n}"] = (row["one_changed_seconds"], "s")
    for s in r["reading"]["sets"]:
        for key in ("loader/copy", "loader/virtual", "dataloader/copy", "dataloader/virtual", "batches/copy"):
            out[f"read {s['set']}: {key}"] = (s["images_per_s"][key], "images/s")
    return out


def main(argv: list[str]) -> str:
    split = argv.index("--")
    sides = [[json.load(open(p)) for p in argv[:split]], [json.load(open(p)) for p in argv[split + 1 :]]]
    per_side = [[figures(r) for r in runs] for runs in sides]
    lines = [f"| figure | before ({len(sides[0])} runs) | after ({len(sides[1])} runs) | after / before |", "|---|---:|---:|---:|"]
    for key, (_, unit) in per_side[0][0].items():
        medians = [statistics.median(run[key][0] for run in side if key in run) for side in per_side]
        ratio = medians[1] / medians[0] if medians[0] else float("nan")
        lines.append(f"| {key} ({unit}) | {medians[0]:,.2f} | {medians[1]:,.2f} | {ratio:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(main(sys.argv[1:]))
