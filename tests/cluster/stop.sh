#!/usr/bin/env bash
# Stop the test cluster that tests/cluster/start.sh started: cancel its jobs, stop slurmd,
# slurmctld and slurmdbd, and stop munged and mariadb only if start.sh was the one that
# started them. Keeps the state dir (logs, config) unless given --clean. Idempotent.
#
#   tests/cluster/stop.sh [--clean]        # COSMODIFF_SLURM_DIR as for start.sh
set -uo pipefail

STATE=${COSMODIFF_SLURM_DIR:-/tmp/cosmodiff-slurm}
CLUSTER=cosmodiff   # ClusterName in start.sh
[[ -d $STATE ]] || { echo "stop.sh: no cluster state in $STATE" >&2; exit 0; }
export SLURM_CONF=$STATE/etc/slurm.conf

# stop_pidfile PIDFILE NAME: SIGTERM, wait up to 20 s, then SIGKILL
stop_pidfile() {
    local pidfile=$1 name=$2 pid
    [[ -f $pidfile ]] || return 0
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid"
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        echo "stopped $name ($pid)" >&2
    fi
    rm -f "$pidfile"
}

if [[ -f $STATE/run/slurmctld.pid ]] && kill -0 "$(cat "$STATE/run/slurmctld.pid")" 2>/dev/null; then
    scancel --quiet --user="$(id -un)" 2>/dev/null || true
    for _ in $(seq 60); do [[ -z $(squeue -h 2>/dev/null) ]] && break; sleep 0.5; done
fi
stop_pidfile "$STATE/run/slurmd.pid" slurmd
stop_pidfile "$STATE/run/slurmctld.pid" slurmctld
stop_pidfile "$STATE/run/slurmdbd.pid" slurmdbd

# Job processes that escaped SLURM's process tracking (proctrack/linuxproc follows parent
# links, so a process whose parent died is lost to it): every process whose environment
# says it runs in a job of this test cluster.
for environ in /proc/[0-9]*/environ; do
    pid=${environ#/proc/}
    pid=${pid%/environ}
    [[ $pid == "$$" ]] && continue
    if { tr '\0' '\n' <"$environ"; } 2>/dev/null | grep -qx "SLURM_CLUSTER_NAME=$CLUSTER"; then
        kill -9 "$pid" 2>/dev/null && echo "killed leftover job process $pid" >&2
    fi
done

if [[ -f $STATE/run/started-mariadb ]]; then
    mysqladmin shutdown 2>/dev/null && echo "stopped mariadb" >&2
    rm -f "$STATE/run/started-mariadb"
fi
if [[ -f $STATE/run/started-munged ]]; then
    stop_pidfile /run/munge/munged.pid munged
    rm -f "$STATE/run/started-munged"
fi
# the link start.sh made in /etc/slurm (never a real configuration)
if [[ -L /etc/slurm/slurm.conf && $(readlink /etc/slurm/slurm.conf) == "$STATE"/* ]]; then
    rm -f /etc/slurm/slurm.conf
fi
if [[ ${1:-} == --clean ]]; then
    rm -rf "$STATE"
fi
exit 0
