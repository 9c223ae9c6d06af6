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
        datasets=verify_params(DATASETS),
    script:
        "../../scripts/verify.py"


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
            datasets=verify_params([_name]),
        script:
            "../../scripts/verify.py"
