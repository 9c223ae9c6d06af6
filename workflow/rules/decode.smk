rule decode_shard:
    input:
        images=get_shard_images,
        labels=get_labels_file,
    output:
        shard=f"{SHARD_DIR}/shard-{{shard}}.h5",
        stats=f"{SHARD_DIR}/shard-{{shard}}.json",
    log:
        "logs/decode_shard/{shard}.log",
    wildcard_constraints:
        shard=r"\d+",
    conda:
        "../../envs/decode_shard.yaml"
    threads: WORKERS
    resources:
        shm_mb=config["shm_budget_mb"],
        # On a cluster: the buffers (shm counts as the job's memory there) plus
        # the processes themselves.
        mem_mb=config["shm_budget_mb"] + 2048,
    params:
        images_dir=config["images_dir"],
        pixels=get_pixel_params(),
        on_error=config["on_error"],
        labels=config["labels"],
        labels_digest=get_labels_digest,
        start_method=config["start_method"],
    script:
        "../../scripts/decode_shard.py"
