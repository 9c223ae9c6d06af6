rule gather:
    input:
        shards=get_shard_files,
    output:
        dataset=f"{RESULTS}{{dataset}}{EXT}",
    log:
        "logs/gather/{dataset}.log",
    conda:
        "../../envs/gather.yaml"
    params:
        mode=get_setting("gather"),
        pixels=get_pixel_params,
        # The dataset's own settings, recorded in the file: another dataset's never rerun it.
        config=lambda wildcards: get_dataset(wildcards).settings,
        left_out=get_left_out,
    script:
        "../../scripts/gather.py"
