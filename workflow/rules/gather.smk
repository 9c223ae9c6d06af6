rule gather:
    input:
        shards=get_shard_files,
    output:
        dataset=config["output"],
    params:
        mode=config["gather"],
        pixels=get_pixel_params(),
        config=config,
    log:
        "logs/gather.log",
    conda:
        "../../envs/gather.yaml"
    script:
        "../../scripts/gather.py"
