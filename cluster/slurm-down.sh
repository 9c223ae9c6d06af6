#!/usr/bin/env bash
# `make slurm-down`: stop the single-node cluster that slurm-up started.
set -u
for daemon in slurmd slurmctld munged; do
  pkill -x "$daemon" && echo "slurm-down: stopped $daemon"
done
exit 0
