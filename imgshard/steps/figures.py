"""Rule figures: the report's contact sheet, throughput chart and stats table (tools/figures.py)."""

from __future__ import annotations

import sys

from ..tools.figures import contact_sheet, stats_table, throughput_chart


def figures_job(job) -> None:
    shown = contact_sheet(job.dataset, job.contact_sheet)
    throughput_chart(job.stats, job.throughput)
    stats_table(job.stats, job.table)
    print(f"figures: contact sheet of {len(shown)} images: {', '.join(shown)}", file=sys.stderr)
