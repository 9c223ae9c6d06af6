# The shard indexes into one dataset, and their stats files into one: a single
# job, so a rerun for one changed image starts one process here, not two.
# The dataset (results/<dataset>.h5) is not a declared output: Snakemake would
# delete it before the job runs, under any reader that has it open. The job
# publishes a new snapshot of it in one atomic step instead (imgshard/publish/);
# redo_what_is_damaged (imgshard/plan/damaged.py) reruns the job when that file is gone.
rule gather:
    input:
        shards=get_shard_files,
        stats=get_shard_stats,
    output:
        stats=FILES.stats,
    log:
        "logs/gather/{dataset}.log",
    conda:
        "../../envs/gather.yaml"
    params:
        job=get_job(
            # Thousands of shards make a long list: job_argument puts it in a file then.
            shards=get_shard_files,
            shard_stats=get_shard_stats,
            mode=get_setting("gather"),
            pixels=get_pixel_params,
            # The dataset's own settings, recorded in the file: another dataset's never rerun it.
            config=lambda wildcards: get_dataset(wildcards).settings,
            left_out=get_left_out,
            format=FORMAT,
        ),
        dataset=lambda wildcards: get_dataset(wildcards).output,
        run=get_run("gather"),
    shell:
        "{params.run} {params.job:q} log={log:q} out={params.dataset:q} stats={output.stats:q}"
