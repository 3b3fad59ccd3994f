#!/usr/bin/env bash
# A real single-node SLURM cluster on 127.0.0.1 for the test suite, without systemd.
#   tests/slurm/cluster.sh start   install (Debian packages, once), configure, start munged/slurmctld/slurmd
#   tests/slurm/cluster.sh stop    stop the daemons by their PID files
#   tests/slurm/cluster.sh env     print the SLURM_CONF line clients need
# State, logs and PID files live in $WARMBENCH_SLURM_DIR (default /tmp/warmbench-slurm). The config is also
# linked at /etc/slurm/slurm.conf: snakemake-executor-plugin-slurm-jobstep strips SLURM_* variables (SLURM_CONF
# too) before its nested srun, which then only finds the compiled-in default path.
set -euo pipefail

DIR="${WARMBENCH_SLURM_DIR:-/tmp/warmbench-slurm}"
CONF="$DIR/slurm.conf"
NODE="$(hostname -s)"

install() {
    if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
        && command -v munged >/dev/null; then
        return
    fi
    if [ "$(id -u)" != 0 ]; then
        echo "SLURM is not installed and this is not root: cannot apt-get install it" >&2
        exit 3
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q slurmctld slurmd slurm-client munge >"$DIR/apt.log" 2>&1 \
        || { apt-get update -q >>"$DIR/apt.log" 2>&1 && apt-get install -y -q slurmctld slurmd slurm-client munge >>"$DIR/apt.log" 2>&1; }
}

write_conf() {
    local mem_mb
    mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 2048 ))
    mkdir -p "$DIR/ctld" "$DIR/d" "$DIR/munge"
    cat >"$CONF" <<CONF
ClusterName=warmbench-ci
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/d
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SchedulerType=sched/backfill
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# A line per finished job (id, state, partition, TRES incl. memory) that outlives MinJobAge: what the tests check
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/jobcomp.log
MpiDefault=none
ReturnToService=2
# No slurmdbd, so no sacct: Snakemake polls squeue, which shows a finished job for MinJobAge seconds.
# Keep it well above 3x the plugin's first status delay, or finished jobs vanish before they are seen.
MinJobAge=300
DefMemPerCPU=2048
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF
    local system=/etc/slurm/slurm.conf
    if [ -e "$system" ] && [ ! -L "$system" ]; then
        echo "$system exists and is not ours: refusing to replace a real cluster's config" >&2
        exit 4
    fi
    mkdir -p /etc/slurm
    ln -sfn "$CONF" "$system"
}

start() {
    mkdir -p "$DIR"
    install
    write_conf
    # munge: a key of its own, a socket in $DIR (no system service touched)
    if [ ! -f "$DIR/munge/munge.key" ]; then
        dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
        chmod 400 "$DIR/munge/munge.key"
    fi
    mkdir -p /run/munge
    if ! [ -f "$DIR/munged.pid" ] || ! kill -0 "$(cat "$DIR/munged.pid")" 2>/dev/null; then
        munged --force --key-file="$DIR/munge/munge.key" --pid-file="$DIR/munged.pid" \
            --socket=/run/munge/munge.socket.2 --log-file="$DIR/munged.log" --seed-file="$DIR/munge/seed"
    fi
    export SLURM_CONF="$CONF"
    slurmctld -f "$CONF"
    slurmd -f "$CONF"
    for _ in $(seq 60); do
        if sinfo -h -o "%t" 2>/dev/null | grep -Eq "^(idle|mix|alloc)"; then
            echo "SLURM up: node $NODE, partition debug, conf $CONF"
            return
        fi
        sleep 1
    done
    echo "SLURM did not come up; logs:" >&2
    tail -n 30 "$DIR"/slurmctld.log "$DIR"/slurmd.log >&2 || true
    exit 1
}

stop() {
    for daemon in slurmd slurmctld munged; do
        if [ -f "$DIR/$daemon.pid" ]; then
            kill "$(cat "$DIR/$daemon.pid")" 2>/dev/null || true
            rm -f "$DIR/$daemon.pid"
        fi
    done
    if [ "$(readlink /etc/slurm/slurm.conf 2>/dev/null)" = "$CONF" ]; then
        rm -f /etc/slurm/slurm.conf
    fi
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    env) echo "SLURM_CONF=$CONF" ;;
    *) echo "usage: $0 start|stop|env" >&2; exit 2 ;;
esac
