"""Parse time: what the workflow runs when Snakemake reads the Snakefile, before any job.

- config.py: checks the schema cannot express, worker counts, shared memory;
- datasets.py: the plan of the run, one ``Dataset`` for each dataset it builds,
  from discover.py (which files), labels.py (their masks or classes),
  probe.py (their size), shard.py (which shard each goes to) and
  manifest.py (each shard's manifest, the shard job's input);
- space.py: refuse a run the disk clearly cannot hold;
- damaged.py: remove outputs that look up to date but stand for files that are gone.
"""
