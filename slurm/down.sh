#!/usr/bin/env bash
# Stop what slurm/up.sh started: by pid file or RPC, nothing by name.
set -u
scontrol shutdown 2>/dev/null || true                           # slurmctld and slurmd
[ -f /run/slurmdbd.pid ] && kill "$(cat /run/slurmdbd.pid)" 2>/dev/null
mariadb-admin shutdown 2>/dev/null || true
[ -f /run/munge/munged.pid ] && kill "$(cat /run/munge/munged.pid)" 2>/dev/null
echo "[slurm_down] stopped"
