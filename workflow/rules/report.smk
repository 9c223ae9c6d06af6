# Figures for `snakemake --report report.html`: what was stored, and how fast;
# one section per dataset.
rule figures:
    input:
        dataset=f"{RESULTS}{{dataset}}{EXT}",
        stats=f"{RESULTS}{{dataset}}.stats.json",
    output:
        contact_sheet=report(
            f"{RESULTS}{{dataset}}.report/contact_sheet.png",
            caption="../report/contact_sheet.rst",
            category="{dataset}",
            subcategory="Dataset",
        ),
        throughput=report(
            f"{RESULTS}{{dataset}}.report/throughput.png",
            caption="../report/throughput.rst",
            category="{dataset}",
            subcategory="Speed",
        ),
        table=report(
            f"{RESULTS}{{dataset}}.report/stats.csv",
            caption="../report/stats.rst",
            category="{dataset}",
            subcategory="Speed",
        ),
    log:
        "logs/figures/{dataset}.log",
    conda:
        "../../envs/gather.yaml"
    script:
        "../../scripts/figures.py"
