# Figures for `snakemake --report report.html`: what was stored, and how fast.
rule figures:
    input:
        dataset=config["output"],
        stats=STATS,
    output:
        contact_sheet=report(
            f"{REPORT_DIR}/contact_sheet.png",
            caption="../report/contact_sheet.rst",
            category="Dataset",
        ),
        throughput=report(
            f"{REPORT_DIR}/throughput.png",
            caption="../report/throughput.rst",
            category="Speed",
        ),
        table=report(
            f"{REPORT_DIR}/stats.csv", caption="../report/stats.rst", category="Speed"
        ),
    log:
        "logs/figures.log",
    conda:
        "../../envs/gather.yaml"
    script:
        "../../scripts/figures.py"
