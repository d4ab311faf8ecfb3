#!/usr/bin/env bash
# A one-node SLURM cluster on this machine for tests/test_slurm.py: munge, MariaDB + slurmdbd (so that sacct
# answers), slurmctld and slurmd, partitions "cpu" and "gpu" (the gpu partition has no GPU: it exists so that the
# profile's partition names resolve). Installs Debian's packages if they are missing (needs root) and is
# idempotent: a second call rewrites the configuration, starts what is not running and restarts slurmctld and slurmd. Prints the node's CPUs and memory (MB) on success.
set -euo pipefail
STATE=${KNEURONS_SLURM_STATE:-/var/lib/kneurons-slurm}
NODE=$(hostname -s)
CPUS=$(nproc)
MEM_MB=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))  # half the machine's memory

if ! command -v slurmctld >/dev/null || ! command -v slurmdbd >/dev/null || ! command -v mariadbd >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm slurmdbd munge mariadb-server >/dev/null
fi

mkdir -p "$STATE"/{spool,state,log,mysql} /etc/slurm /run/munge /run/mysqld
# munge: a key and the daemon
if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
chmod 0400 /etc/munge/munge.key
pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged

# MariaDB for slurmdbd
chown -R mysql:mysql "$STATE/mysql" /run/mysqld
if [ ! -d "$STATE/mysql/mysql" ]; then
  mariadb-install-db --user=mysql --datadir="$STATE/mysql" >/dev/null
fi
if ! pgrep -x mariadbd >/dev/null; then
  runuser -u mysql -- /usr/sbin/mariadbd --datadir="$STATE/mysql" --socket=/run/mysqld/mysqld.sock \
    --skip-networking=0 --bind-address=127.0.0.1 --log-error="$STATE/mysql/mariadb.log" >/dev/null 2>&1 &
  for _ in $(seq 60); do mariadb -uroot -e "select 1" >/dev/null 2>&1 && break; sleep 0.5; done
fi
mariadb -uroot -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db; \
  CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm'; \
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"

cat > /etc/slurm/slurmdbd.conf <<CONF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
LogFile=$STATE/log/slurmdbd.log
PidFile=$STATE/slurmdbd.pid
CONF
chmod 600 /etc/slurm/slurmdbd.conf

cat > /etc/slurm/slurm.conf <<CONF
ClusterName=kneurons
SlurmctldHost=$NODE
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MinJobAge=600
EnforcePartLimits=ALL
SchedulerParameters=defer
StateSaveLocation=$STATE/state
SlurmdSpoolDir=$STATE/spool
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=$NODE CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=cpu Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$NODE MaxTime=INFINITE State=UP
CONF

pgrep -x slurmdbd >/dev/null || /usr/sbin/slurmdbd
for _ in $(seq 60); do sacctmgr -n show cluster >/dev/null 2>&1 && break; sleep 0.5; done
sacctmgr -i add cluster kneurons >/dev/null 2>&1 || true
sacctmgr -i add account kneurons Cluster=kneurons >/dev/null 2>&1 || true
sacctmgr -i add user root Account=kneurons >/dev/null 2>&1 || true
for daemon in slurmctld slurmd; do  # restarted, so that they read the configuration written above
  pkill -x "$daemon" 2>/dev/null && while pgrep -x "$daemon" >/dev/null; do sleep 0.2; done
  "/usr/sbin/$daemon"
done
for _ in $(seq 60); do
  if sinfo -h -o %T 2>/dev/null | grep -qE "^(idle|mix|alloc)"; then
    echo "cpus=${CPUS} mem_mb=${MEM_MB}"
    exit 0
  fi
  scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true
  sleep 1
done
echo "slurm did not come up; logs in $STATE/log" >&2
sinfo >&2 || true
exit 1
