# Per-shard stats files summed into one: counts, skips by reason, timings, bytes.
rule stats:
    input:
        shards=get_shard_stats,
        dataset=f"{RESULTS}{{dataset}}{EXT}",
    output:
        stats=f"{RESULTS}{{dataset}}.stats.json",
    log:
        "logs/stats/{dataset}.log",
    conda:
        "../../envs/gather.yaml"
    script:
        "../../scripts/stats.py"
