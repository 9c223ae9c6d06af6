#!/usr/bin/env bash
# `make slurm-down`: stop the single-node cluster that slurm-up started, and
# wait until the daemons are gone, so that a slurm-up right after starts new ones.
set -u
for daemon in slurmd slurmctld munged; do
  pkill -x "$daemon" && echo "slurm-down: stopping $daemon"
done
running() {
  for daemon in slurmd slurmctld munged; do
    pgrep -x "$daemon" >/dev/null && echo "$daemon"
  done
}
for _ in $(seq 30); do
  [ -z "$(running)" ] && { echo "slurm-down: stopped"; exit 0; }
  sleep 0.5
done
echo "slurm-down: still running after 15 s: $(running | tr '\n' ' ')" >&2
exit 1
