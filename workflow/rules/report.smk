# Figures for the report: what was stored, and how fast; one section per
# dataset. Drawn only when a report is asked for, as the target report_figures:
#   snakemake --cores N report_figures --report report.html --report-after-run
# They cost seconds that a build, or a rerun for one changed image, need not pay.
rule figures:
    input:
        stats=FILES.stats,
    output:
        contact_sheet=report(
            f"{FILES.report_dir}/contact_sheet.png",
            caption="../report/contact_sheet.rst",
            category="{dataset}",
            subcategory="Dataset",
        ),
        throughput=report(
            f"{FILES.report_dir}/throughput.png",
            caption="../report/throughput.rst",
            category="{dataset}",
            subcategory="Speed",
        ),
        table=report(
            f"{FILES.report_dir}/stats.csv",
            caption="../report/stats.rst",
            category="{dataset}",
            subcategory="Speed",
        ),
    log:
        "logs/figures/{dataset}.log",
    conda:
        "../../envs/gather.yaml"
    params:
        job=get_job(),
        run=get_run("figures"),
        dataset=lambda wildcards: get_dataset(wildcards).output,
    shell:
        "{params.run} {params.job:q} log={log:q} dataset={params.dataset:q} stats={input.stats:q}"
        " contact_sheet={output.contact_sheet:q} throughput={output.throughput:q} table={output.table:q}"


rule report_figures:
    input:
        expand(rules.figures.output, dataset=DATASETS),
