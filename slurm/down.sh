#!/usr/bin/env bash
# Stop what slurm/up.sh started: by pid file or RPC, nothing by name.
set -u
scontrol shutdown 2>/dev/null || true                           # slurmctld and slurmd
[ -f /run/slurmdbd.pid ] && kill "$(cat /run/slurmdbd.pid)" 2>/dev/null
mariadb-admin shutdown 2>/dev/null || true
[ -f /run/munge/munged.pid ] && kill "$(cat /run/munge/munged.pid)" 2>/dev/null
# wait until they are gone, so that an up.sh right after starts fresh daemons instead of finding dying ones
alive() { for n in slurmctld slurmd slurmdbd mariadbd munged; do pgrep -x "$n" >/dev/null && return 0; done; return 1; }
for i in $(seq 40); do alive || break; sleep 0.5; done
echo "[slurm_down] stopped"
