#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the test that runs docs/sweeps.md's Slurm jobs
# (host/tests/slurm.rs) or to try them by hand. Needs root and Debian's slurm-wlm and munge
# (scripts/setup-debian.sh installs both). No systemd: the daemons are started directly.
#
#   scripts/slurm-localhost.sh start DIR   # slurm.conf, state and logs in DIR; waits for the node
#   SLURM_CONF=DIR/slurm.conf sbatch ...   # the clients find the cluster through SLURM_CONF
#   scripts/slurm-localhost.sh stop DIR    # stops slurmctld and slurmd (munged keeps running)
set -euo pipefail

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
action=$1
dir=$(realpath -m "$2")

stop() {
    for daemon in slurmd slurmctld; do
        pidfile="$dir/$daemon.pid"
        if [ -s "$pidfile" ]; then
            kill "$(cat "$pidfile")" 2>/dev/null || true
        fi
    done
    # slurmd's job steps end with it; give both a moment to leave.
    for _ in $(seq 50); do
        alive=0
        for daemon in slurmd slurmctld; do
            pidfile="$dir/$daemon.pid"
            [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null && alive=1
        done
        [ $alive -eq 0 ] && return 0
        sleep 0.1
    done
}

start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        return 0
    fi
    if [ ! -s /etc/munge/munge.key ]; then
        head -c 1024 /dev/urandom > /etc/munge/munge.key
    fi
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge
    chmod 400 /etc/munge/munge.key
    su -s /bin/sh munge -c /usr/sbin/munged
    munge -n | unmunge >/dev/null || {
        echo "munged started but a credential does not round-trip (see /var/log/munge)" >&2
        exit 1
    }
}

start() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "starting slurmctld and slurmd needs root" >&2
        exit 1
    fi
    for tool in munged slurmctld slurmd sbatch; do
        command -v "$tool" >/dev/null || {
            echo "$tool is missing: run scripts/setup-debian.sh (installs slurm-wlm and munge)" >&2
            exit 1
        }
    done
    start_munge
    mkdir -p "$dir/state" "$dir/spool"
    host=$(hostname -s)
    # More CPUs than the machine has (config_overrides), so that jobs asking for
    # --cpus-per-task=8 as docs/sweeps.md's do are scheduled on a 2-core machine.
    cat > "$dir/slurm.conf" <<EOF
ClusterName=dnal-localhost
SlurmctldHost=$host
SlurmUser=root
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SlurmdParameters=config_overrides
ReturnToService=2
NodeName=$host CPUs=16 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    slurmctld -f "$dir/slurm.conf" -L "$dir/slurmctld.log"
    slurmd -f "$dir/slurm.conf" -L "$dir/slurmd.log"
    for _ in $(seq 300); do
        state=$(SLURM_CONF="$dir/slurm.conf" sinfo -h -o %T 2>/dev/null || true)
        case $state in
            idle*) return 0 ;;
        esac
        sleep 0.1
    done
    echo "the node did not become idle in 30 s (sinfo: '$state'); logs in $dir" >&2
    stop
    exit 1
}

case $action in
    start) start ;;
    stop) stop ;;
    *) usage ;;
esac
