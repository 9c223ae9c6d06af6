# Per-shard stats files summed into one: counts, skips by reason, timings, bytes.
rule stats:
    input:
        shards=get_shard_stats,
        dataset=config["output"],
    output:
        stats=STATS,
    log:
        "logs/stats.log",
    conda:
        "../../envs/gather.yaml"
    script:
        "../../scripts/stats.py"
