rule gather:
    input:
        shards=get_shard_files,
    output:
        dataset=config["output"],
    log:
        "logs/gather.log",
    conda:
        "../../envs/gather.yaml"
    params:
        mode=config["gather"],
        pixels=get_pixel_params(),
        config=config,
        left_out=LEFT_OUT,
    script:
        "../../scripts/gather.py"
