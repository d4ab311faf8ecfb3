#!/usr/bin/env bash
# Undo what tests/slurm/start_cluster.sh left running: its daemons stopped and its configuration removed, so that
# Snakemake starts later on this machine do not probe a cluster that is gone (the SLURM executor plugin asks
# `scontrol show config` while it loads, and with /etc/slurm/slurm.conf naming an absent controller that takes 9 s
# at every start). Debian's packages and the state directory stay: a next start is quicker.
set -u
for daemon in slurmd slurmctld slurmdbd mariadbd munged; do
  pkill -x "$daemon" 2>/dev/null
done
for _ in $(seq 100); do
  pgrep -x 'slurmd|slurmctld|slurmdbd|mariadbd|munged' >/dev/null || break
  sleep 0.2
done
rm -f /etc/slurm/slurm.conf /etc/slurm/slurmdbd.conf
