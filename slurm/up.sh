#!/usr/bin/env bash
# Bring up a single-node SLURM (+ accounting) on Debian 12 without systemd, as root: munge, MariaDB, slurmdbd,
# slurmctld, slurmd; partition "debug" on this machine. Idempotent (re-running restarts nothing that runs).
# Used by .ci/run and by hand (slurm/README.md). ACCOUNTING=0 skips slurmdbd (then submitit hangs on killed jobs).
set -euo pipefail
ACCOUNTING=${ACCOUNTING:-1}
NODE=${SLURM_NODE:-localhost}
t0=$(date +%s)
export DEBIAN_FRONTEND=noninteractive
if ! command -v slurmctld >/dev/null; then
  apt-get update -qq
  pkgs="slurm-wlm munge"; [ "$ACCOUNTING" = 1 ] && pkgs="$pkgs slurmdbd mariadb-server"
  apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
fi
echo "[slurm_up] packages ready after $(( $(date +%s)-t0 ))s"

# munge (the package's postinst already created /etc/munge/munge.key)
[ -s /etc/munge/munge.key ] || { /usr/sbin/mungekey --create 2>/dev/null || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=128; chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
install -d -o munge -g munge -m 0755 /run/munge
pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged
munge -n | unmunge >/dev/null

install -d /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
if [ "$ACCOUNTING" = 1 ]; then
  install -d -o mysql -g mysql /run/mysqld
  if ! mariadb-admin ping >/dev/null 2>&1; then
    setsid /usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1 >/var/log/slurm/mariadbd.out 2>&1 < /dev/null &
    for i in $(seq 60); do mariadb-admin ping >/dev/null 2>&1 && break; sleep 0.5; done
  fi
  mariadb -u root -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db; CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurmpw'; GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"
  cat > /etc/slurm/slurmdbd.conf <<EOC
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
DebugLevel=info
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurmpw
StorageLoc=slurm_acct_db
EOC
  chmod 600 /etc/slurm/slurmdbd.conf
  ACCT="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30"
else
  ACCT="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
fi

cat > /etc/slurm/slurm.conf <<EOC
ClusterName=ci
SlurmctldHost=$NODE
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
$ACCT
JobCompType=jobcomp/none
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=300
KillWait=5
# a requeued job waits cred_expire seconds before it may start again (default 120): 10 keeps the preemption tests
# short; a production site keeps its own
AuthInfo=cred_expire=10
Waittime=0
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$(nproc) Sockets=1 CoresPerSocket=$(nproc) ThreadsPerCore=1 RealMemory=$(( $(free -m | awk '/^Mem:/{print $2}') * 8 / 10 )) State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOC

if [ "$ACCOUNTING" = 1 ]; then
  pgrep -x slurmdbd >/dev/null || /usr/sbin/slurmdbd
  for i in $(seq 60); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.5; done
  sacctmgr -n list cluster format=cluster | grep -qw ci || sacctmgr -i add cluster ci >/dev/null
fi
pgrep -x slurmctld >/dev/null || /usr/sbin/slurmctld
pgrep -x slurmd >/dev/null || /usr/sbin/slurmd -N "$NODE"
for i in $(seq 60); do sinfo -h -o %t 2>/dev/null | grep -qx idle && break; sleep 0.5; done
sinfo
echo "[slurm_up] up after $(( $(date +%s)-t0 ))s"
