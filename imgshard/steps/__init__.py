"""What the rules' scripts call: the job Snakemake hands over turned into plain arguments, plus logging.

Kept apart from the stages themselves so that tests call the stages with
plain arguments and no Snakemake at all. Each rule's script
(``scripts/<step>.py``) is ``run_step(<step>_job, sys.argv[1:])``:

- args.py: the command line a rule builds (``get_run``, ``get_job`` in
  workflow/rules/common.smk) and the files long settings spill into;
- run.py: the job's log, its one-line failure, and its signals;
- decode_shard.py, gather.py, verify.py, figures.py: one adapter a rule;
- stats.py: the shard's and the dataset's stats files;
- progress.py: the live progress line and the summary, in the Snakemake process.
"""
