#!/usr/bin/env bash
# Start a single-node SLURM cluster (with accounting) on this machine, for the tests of the
# SLURM profile (tests/test_slurm.py). Needs root and Debian/Ubuntu (apt). Idempotent: rerun it
# at will; what is already running is left alone.
#
#   sudo tests/cluster/start.sh            # state, config and logs under /tmp/cosmodiff-slurm
#   sinfo; sbatch -p cosmodiff -A cosmodiff --gpus 1 --wrap 'echo $CUDA_VISIBLE_DEVICES'
#   sudo tests/cluster/stop.sh             # --clean also removes the state dir
#
# The config lives in the state dir; /etc/slurm/slurm.conf becomes a link to it (the commands
# run inside jobs do not see SLURM_CONF), unless a real SLURM config is there: then it stops.
# What it does (as in docs/method.md section 5): installs slurm-wlm, slurmdbd, munge and
# mariadb-server if missing; starts munged (as user munge) and mariadbd-safe; creates a database
# and user for slurmdbd; writes slurmdbd.conf (mode 600), slurm.conf and gres.conf under the
# state dir; starts slurmdbd, slurmctld and slurmd; registers cluster, account and user with
# sacctmgr; waits until the node is idle. The node has this machine's CPUs (nproc) and two fake
# GPUs (gres files /dev/null and /dev/zero), so `--gpus 1` jobs are scheduled and get
# CUDA_VISIBLE_DEVICES, and sacct records gres/gpu in their TRES.
#
# Environment: COSMODIFF_SLURM_DIR (state dir, default /tmp/cosmodiff-slurm),
# COSMODIFF_SLURM_PARTITION (default cosmodiff), COSMODIFF_SLURM_ACCOUNT (default cosmodiff),
# COSMODIFF_SLURM_TIMEOUT (seconds to wait for the node, default 120).
# Prints, last, three lines: SLURM_CONF=..., partition=..., account=...
set -euo pipefail

T0=$(date +%s%N)
STATE=${COSMODIFF_SLURM_DIR:-/tmp/cosmodiff-slurm}
PARTITION=${COSMODIFF_SLURM_PARTITION:-cosmodiff}
ACCOUNT=${COSMODIFF_SLURM_ACCOUNT:-cosmodiff}
CLUSTER=cosmodiff
TIMEOUT=${COSMODIFF_SLURM_TIMEOUT:-120}
DB=slurm_acct_db
DBUSER=slurm
DBPASS=cosmodiff-test-only
NODE=$(hostname -s)
NCPU=$(nproc)
USER_NAME=$(id -un)

elapsed() { local ms=$((($(date +%s%N) - T0) / 1000000)); printf '%d.%01d' $((ms / 1000)) $((ms % 1000 / 100)); }
say() { echo "[cluster $(elapsed)s] $*" >&2; }
die() { echo "start.sh: $*" >&2; exit 1; }
alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
    local limit=$1 what=$2; shift 2
    for ((i = 0; i < limit * 5; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
    die "timed out after ${limit}s waiting for $what (logs: $STATE/log)"
}

[[ $(id -u) -eq 0 ]] || die "must run as root (it starts munged, mariadb and the SLURM daemons)"

mkdir -p "$STATE"/{etc,log,run,spool,state}
chmod 755 "$STATE"

# --- packages --------------------------------------------------------------------------------
need=()
for pair in slurmctld:slurm-wlm slurmd:slurm-wlm slurmdbd:slurmdbd munged:munge \
    mariadbd-safe:mariadb-server; do
    command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
if ((${#need[@]})); then
    command -v apt-get >/dev/null || die "missing ${need[*]} and no apt-get to install them"
    say "installing slurm-wlm slurmdbd munge mariadb-server"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >"$STATE/log/apt.log" 2>&1 || die "apt-get update failed (see $STATE.apt.log)"
    apt-get install -y -qq slurm-wlm slurmdbd munge mariadb-server >>"$STATE/log/apt.log" 2>&1 ||
        die "apt-get install failed (see $STATE.apt.log)"
fi

# --- munge -----------------------------------------------------------------------------------
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    say "starting munged"
    [[ -s /etc/munge/munge.key ]] || { mungekey --create 2>/dev/null || create-munge-key -f; }
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
    install -d -o munge -g munge -m 755 /run/munge /var/log/munge /var/lib/munge
    runuser -u munge -- munged
    touch "$STATE/run/started-munged"
    wait_for 20 munged sh -c 'munge -n | unmunge'
fi

# --- mariadb ---------------------------------------------------------------------------------
if ! mysqladmin ping >/dev/null 2>&1; then
    say "starting mariadbd-safe"
    install -d -o mysql -g mysql /run/mysqld
    [[ -d /var/lib/mysql/mysql ]] || mariadb-install-db --user=mysql >"$STATE/log/mariadb-install.log" 2>&1
    setsid nohup mariadbd-safe --user=mysql >"$STATE/log/mariadbd-safe.log" 2>&1 </dev/null &
    touch "$STATE/run/started-mariadb"
    wait_for 60 mariadb mysqladmin ping
fi
mariadb -u root <<SQL
CREATE DATABASE IF NOT EXISTS $DB;
CREATE USER IF NOT EXISTS '$DBUSER'@'localhost' IDENTIFIED BY '$DBPASS';
GRANT ALL ON $DB.* TO '$DBUSER'@'localhost';
FLUSH PRIVILEGES;
SQL

# --- configuration ---------------------------------------------------------------------------
# Memory is not a consumable resource here (CR_Core) and nothing enforces it (no cgroups), so
# the node advertises a nominal 256 GB (config_overrides: slurmd does not drain it for having
# less): the profile's paper-sized mem_mb requests (up to 64 GB) stay schedulable. CPUs are the
# real ones, so a job gets the cores it asks for.
cat >"$STATE/etc/slurm.conf" <<EOF
# Written by tests/cluster/start.sh (linked from /etc/slurm/slurm.conf): a single-node test
# cluster. Do not use in production.
ClusterName=$CLUSTER
SlurmctldHost=$NODE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
GresTypes=gpu
SlurmdParameters=config_overrides
ReturnToService=2
StateSaveLocation=$STATE/state
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
AccountingStorageTRES=gres/gpu
AccountingStorageEnforce=associations
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=5
KillWait=15
InactiveLimit=0
MinJobAge=300
NodeName=$NODE CPUs=$NCPU RealMemory=262144 Gres=gpu:2 State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
cat >"$STATE/etc/gres.conf" <<EOF
NodeName=$NODE Name=gpu File=/dev/null
NodeName=$NODE Name=gpu File=/dev/zero
EOF
(
    umask 077
    cat >"$STATE/etc/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
LogFile=$STATE/log/slurmdbd.log
PidFile=$STATE/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=$DB
StorageUser=$DBUSER
StoragePass=$DBPASS
EOF
)
chmod 600 "$STATE/etc/slurmdbd.conf"
chmod 644 "$STATE/etc/slurm.conf" "$STATE/etc/gres.conf"
export SLURM_CONF=$STATE/etc/slurm.conf
# Client commands inside a job do not see SLURM_CONF (the Snakemake SLURM jobstep plugin drops
# every SLURM_* variable before its nested srun), so the config must also be where the
# commands look by default. Link it there, but never replace a real SLURM configuration.
SYSCONF=/etc/slurm/slurm.conf
if [[ -L $SYSCONF && $(readlink "$SYSCONF") == "$STATE"/* ]]; then
    ln -sfn "$SLURM_CONF" "$SYSCONF"
elif [[ -e $SYSCONF || -L $SYSCONF ]]; then
    die "$SYSCONF exists and is not this test cluster's: refusing to replace it"
else
    mkdir -p /etc/slurm && ln -s "$SLURM_CONF" "$SYSCONF"
fi

# --- slurmdbd, cluster registration, slurmctld, slurmd ---------------------------------------
if ! alive "$STATE/run/slurmdbd.pid"; then
    say "starting slurmdbd"
    slurmdbd
    wait_for 60 slurmdbd sacctmgr -n list cluster
fi
sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER" ||
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
if ! alive "$STATE/run/slurmctld.pid"; then
    say "starting slurmctld"
    slurmctld
    wait_for 60 slurmctld scontrol ping
fi
if ! alive "$STATE/run/slurmd.pid"; then
    say "starting slurmd"
    slurmd
fi
sacctmgr -n -P list account format=account | grep -qx "$ACCOUNT" ||
    sacctmgr -i add account "$ACCOUNT" cluster="$CLUSTER" description="cosmodiff tests" \
        organization=cosmodiff >/dev/null
sacctmgr -n -P list association format=account,user | grep -qx "$ACCOUNT|$USER_NAME" ||
    sacctmgr -i add user "$USER_NAME" account="$ACCOUNT" cluster="$CLUSTER" \
        defaultaccount="$ACCOUNT" >/dev/null

# a node left down or drained by an earlier run comes back
state=$(sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
case $state in
down* | drain* | fail*) scontrol update nodename="$NODE" state=resume || true ;;
esac
# idle (or busy with jobs when rerun on a running cluster)
node_idle() { [[ $(sinfo -h -p "$PARTITION" -n "$NODE" -o %T) =~ ^(idle|mixed|allocated)$ ]]; }
wait_for "$TIMEOUT" "node $NODE to be idle in partition $PARTITION" node_idle

say "up in $(elapsed)s: $(sinfo -h -p "$PARTITION" -o '%P %D %T %c CPUs %G')"
echo "SLURM_CONF=$SLURM_CONF"
echo "partition=$PARTITION"
echo "account=$ACCOUNT"
