# `snakemake verify`: re-read every source and compare it with the dataset.
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
        dataset=config["output"],
        images_dir=config["images_dir"],
        images=IMAGES,
    script:
        "../../scripts/verify.py"
