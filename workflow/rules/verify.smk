# `snakemake verify` checks every dataset; `snakemake verify_<name>` one of them.
# The dataset is a param, not an input: an input would make Snakemake rebuild
# it from changed sources first, and verify would check the rebuilt one.
# No output file, so it runs every time it is asked for, and never by default.
rule verify:
    log:
        "logs/verify.log",
    conda:
        "../../envs/verify.yaml"
    threads: WORKERS
    params:
        job=get_job(datasets=verify_params(DATASETS)),
        run=get_run("verify"),
    shell:
        "{params.run} {params.job:q} log={log:q}"


for _name in DATASETS:

    rule:
        name:
            f"verify_{_name}"
        log:
            f"logs/verify_{_name}.log",
        conda:
            "../../envs/verify.yaml"
        threads: WORKERS
        params:
            job=get_job(datasets=verify_params([_name])),
            run=get_run("verify"),
        shell:
            "{params.run} {params.job:q} log={log:q}"
