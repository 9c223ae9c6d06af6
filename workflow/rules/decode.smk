rule decode_shard:
    input:
        manifest=get_manifest,
        labels=get_labels_file,
    output:
        shard=FILES.index("{shard}"),
        stats=FILES.shard_stats("{shard}"),
    log:
        "logs/decode_shard/{dataset}/{shard}.log",
    # Heaviest shards first, so that no core waits alone on a big one at the end.
    priority: get_shard_priority
    conda:
        "../../envs/decode_shard.yaml"
    threads: get_shard_workers
    resources:
        # shm_budget_mb shared out over the jobs that run at once (all of it on a cluster)
        shm_mb=get_shard_shm_mb,
        mem_mb=get_shard_mem_mb,
    params:
        job=get_job(
            shard=lambda wildcards: int(wildcards.shard),
            images_dir=get_setting("images_dir"),
            pixels=get_pixel_params,
            on_error=get_setting("on_error"),
            labels=get_setting("labels"),
            labels_digest=get_labels_digest,
            classes=get_classes,
            format=FORMAT,
        ),
        # None of these changes a pixel, and changing one reruns nothing.
        run=get_run(
            "decode_shard",
            resource_names=["shm_mb"],
            start_method=config["start_method"],
            reuse=config["reuse"],
            jobs_at_once=get_jobs_at_once,
            progress=get_progress_file,
        ),
    shell:
        "{params.run} {params.job:q} log={log:q} manifest={input.manifest:q}"
        " out={output.shard:q} stats={output.stats:q}"
