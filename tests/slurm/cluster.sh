#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, for tests.
#
#   cluster.sh up      install (if missing), configure and start munged, slurmctld and
#                      slurmd; wait for the node to be idle and prove a job runs.
#                      Idempotent: when the cluster is already up it only checks it.
#   cluster.sh down    cancel every job, stop slurmd, slurmctld and munged.
#   cluster.sh status  exit 0 when the daemons answer and the node can take jobs.
#
# Exit status: 0 ok, 3 "Slurm cannot be installed/run here" (no root, apt-get failed),
# anything else a real failure, with a one-line reason on stderr.
#
# No systemd is assumed: the daemons are started directly, daemonised, with pid files.
# The configuration is one node (this machine's short hostname, reached on 127.0.0.1),
# one partition `debug`, no accounting database and no cgroup plugins (containers
# rarely have a writable cgroup tree).
set -euo pipefail

PROG="cluster.sh"
CONF=/etc/slurm/slurm.conf
BACKUP=/etc/slurm/slurm.conf.harness-bak
MARKER="# Written by harness tests/slurm/cluster.sh"
SPOOL=/var/spool/slurm-harness
LOGDIR=/var/log/slurm-harness
RUNDIR=/run/slurm-harness
CTLD_PID=$RUNDIR/slurmctld.pid
SLURMD_PID=$RUNDIR/slurmd.pid
CTLD_LOG=$LOGDIR/slurmctld.log
SLURMD_LOG=$LOGDIR/slurmd.log
MUNGE_RUN=/run/munge
MUNGE_PID=$MUNGE_RUN/munged.pid
MUNGE_KEY=/etc/munge/munge.key
MUNGE_LOG=/var/log/munge/munged.log
PARTITION=debug
NODE=$(hostname -s)

say() { echo "$PROG: $*"; }

# die CODE REASON [LOGFILE]: one line saying why, then the tail of the daemon log.
die() {
    local code=$1 reason=$2 log=${3:-}
    if [[ -n $log && -r $log ]]; then
        echo "--- tail of $log ---" >&2
        tail -n 20 "$log" >&2 || true
    fi
    echo "$PROG: $reason" >&2
    exit "$code"
}

# ---------------------------------------------------------------------------- root
# Everything here (packages, /etc, daemons as root) needs root: re-run under sudo when
# we are not root and sudo works without a password, otherwise "cannot run here".
if [[ $EUID -ne 0 ]]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        exec sudo -n bash "$0" "$@"
    fi
    echo "$PROG: cannot set up slurm here: not root and no passwordless sudo" >&2
    exit 3
fi

# ---------------------------------------------------------------------------- helpers

# pid_alive PIDFILE NAME: the pid file names a live process called NAME.
pid_alive() {
    local pid
    [[ -r $1 ]] || return 1
    pid=$(cat "$1" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$2" ]]
}

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

ctld_ok() { pid_alive "$CTLD_PID" slurmctld && timeout 10 scontrol ping 2>/dev/null | grep -q 'is UP'; }

# The node's state as sinfo prints it, e.g. idle, mixed, down*, drained, idle~. A
# trailing '*' means not responding, '~' '#' '%' '!' '@' '^' powered off or rebooting;
# '-' (planned by backfill for a pending job) and '$' (reserved) still take jobs.
node_state() { timeout 10 sinfo -h -n "$NODE" -o %T 2>/dev/null | head -n1; }

# The node is responding and idle, running jobs, or planned for a pending one.
node_ok() {
    case "$(node_state)" in
        idle | mixed | allocated | completing | planned) return 0 ;;
        idle[-$] | mixed[-$] | allocated[-$] | completing[-$] | planned[-$]) return 0 ;;
        *) return 1 ;;
    esac
}

cluster_ok() {
    munge_ok && ctld_ok && pid_alive "$SLURMD_PID" slurmd && node_ok
}

# stop_daemon PIDFILE NAME: TERM the process in the pid file, then any left by that
# exact name (a daemon whose pid file was lost), KILL after 10 s.
stop_daemon() {
    local pidfile=$1 name=$2 pids="" pid i
    if pid_alive "$pidfile" "$name"; then
        pids=$(cat "$pidfile")
    fi
    pids="$pids $(pgrep -x "$name" || true)"
    pids=$(echo "$pids" | tr ' ' '\n' | sort -u | tr '\n' ' ')
    [[ -n ${pids// /} ]] || { rm -f "$pidfile"; return 0; }
    # shellcheck disable=SC2086  # word splitting of the pid list is intended
    kill -TERM $pids 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        local alive=""
        for pid in $pids; do
            [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$name" ]] && alive="$alive $pid"
        done
        [[ -z $alive ]] && break
        sleep 0.1
    done
    for pid in ${alive:-}; do kill -KILL "$pid" 2>/dev/null || true; done
    rm -f "$pidfile"
}

# ---------------------------------------------------------------------------- install

install_packages() {
    local missing="" cmd out
    for cmd in sbatch slurmctld slurmd munged; do
        command -v "$cmd" >/dev/null 2>&1 || missing="$missing $cmd"
    done
    [[ -z $missing ]] && return 0
    command -v apt-get >/dev/null 2>&1 ||
        die 3 "cannot install slurm packages: missing$missing and no apt-get"
    say "installing slurm packages (missing:$missing)"
    if ! out=$(apt-get update 2>&1); then
        die 3 "cannot install slurm packages: apt-get update failed: $(echo "$out" | grep -v '^\s*$' | tail -n1)"
    fi
    if ! out=$(DEBIAN_FRONTEND=noninteractive apt-get install -y slurmctld slurmd slurm-client munge 2>&1); then
        die 3 "cannot install slurm packages: $(echo "$out" | grep -v '^\s*$' | tail -n1)"
    fi
    # Debian's postinst may have started the daemons through an init script with its
    # own (empty) configuration; ours are started below, by us.
    for cmd in sbatch slurmctld slurmd munged; do
        command -v "$cmd" >/dev/null 2>&1 ||
            die 3 "cannot install slurm packages: $cmd still missing after apt-get install"
    done
}

# ---------------------------------------------------------------------------- munge

start_munge() {
    # munged refuses a key that is not owned by munge or readable by others.
    if [[ ! -s $MUNGE_KEY ]]; then
        mkdir -p "$(dirname "$MUNGE_KEY")"
        if command -v mungekey >/dev/null 2>&1; then
            mungekey --create --force --keyfile="$MUNGE_KEY" >/dev/null
        else
            dd if=/dev/urandom of="$MUNGE_KEY" bs=1 count=1024 status=none
        fi
    fi
    chown munge:munge "$(dirname "$MUNGE_KEY")" "$MUNGE_KEY"
    chmod 0700 "$(dirname "$MUNGE_KEY")"
    chmod 0400 "$MUNGE_KEY"

    munge_ok && return 0

    # /run is a tmpfs: the socket directory has to be recreated, owned by munge.
    install -d -o munge -g munge -m 0755 "$MUNGE_RUN"
    install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
    rm -f "$MUNGE_RUN/munge.socket.2" "$MUNGE_RUN/munge.socket.2.lock"
    # As the munge user first (its normal way); --force as root where that fails.
    runuser -u munge -- munged >/dev/null 2>&1 || munged --force >/dev/null 2>&1 || true
    local i
    for ((i = 0; i < 50; i++)); do
        munge_ok && return 0
        sleep 0.1
    done
    die 1 "munged did not start" "$MUNGE_LOG"
}

# ---------------------------------------------------------------------------- slurm.conf

# A bit under the memory free now, in MB, rounded down to 256 MB (slurmd drains a node
# whose RealMemory is above what it finds).
real_memory() {
    local avail_kb
    avail_kb=$(awk '/^MemAvailable:/ {print $2}' /proc/meminfo)
    echo $((avail_kb * 9 / 10 / 1024 / 256 * 256))
}

# write_conf REALMEM: the whole slurm.conf on stdout.
write_conf() {
    cat <<EOF
$MARKER; rewritten by every 'up'.
ClusterName=harness-test
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
# Debian sets no mail program; slurmctld logs an error without one.
MailProg=/bin/true
SwitchType=switch/none
# No cgroup plugins: the container's cgroup tree is not ours to write.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
# CPUs are the consumable: two 1-CPU jobs share the node, an all-CPU job waits.
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
# Quick scheduling for tests: a batch job is looked at when submitted (by default one
# submitted soon after another may wait 3 s, batch_sched_delay), and the backfill pass
# that starts whatever can start runs every second, not 30 s (a job released or freed
# while the node was still completing a cancelled job otherwise waits for it).
SchedulerParameters=batch_sched_delay=0,bf_interval=1
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# No sacct database: finished jobs stay in 'scontrol show job' for an hour.
MinJobAge=3600
KillWait=10
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
# A node that was down for any reason comes back by itself when slurmd registers.
ReturnToService=2
StateSaveLocation=$SPOOL/ctld
SlurmdSpoolDir=$SPOOL/d
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$CTLD_LOG
SlurmdLogFile=$SLURMD_LOG
SlurmctldDebug=info
SlurmdDebug=info
NodeName=$NODE NodeAddr=127.0.0.1 NodeHostname=$NODE CPUs=$(nproc) RealMemory=$1 State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
}

# Writes /etc/slurm/slurm.conf; prints "changed" when it differs from what was there.
install_conf() {
    local realmem new
    mkdir -p "$(dirname "$CONF")"
    # Keep the RealMemory of our own earlier conf, so that free memory moving a little
    # does not count as a configuration change (and restart the daemons).
    if [[ -r $CONF ]] && grep -qF "$MARKER" "$CONF"; then
        realmem=$(sed -n 's/^NodeName=.* RealMemory=\([0-9]*\).*/\1/p' "$CONF")
    fi
    realmem=${realmem:-$(real_memory)}
    new=$(write_conf "$realmem")
    if [[ -r $CONF ]] && [[ "$(cat "$CONF")" == "$new" ]]; then
        return 0
    fi
    # Someone else's slurm.conf is kept, once.
    if [[ -e $CONF ]] && ! grep -qF "$MARKER" "$CONF" && [[ ! -e $BACKUP ]]; then
        cp -p "$CONF" "$BACKUP"
        say "kept the previous $CONF as $BACKUP" >&2
    fi
    printf '%s\n' "$new" >"$CONF.tmp"
    chmod 0644 "$CONF.tmp"
    mv "$CONF.tmp" "$CONF"
    echo changed
}

# ---------------------------------------------------------------------------- daemons

start_slurm() {
    mkdir -p "$SPOOL/ctld" "$SPOOL/d" "$LOGDIR" "$RUNDIR"
    if ! ctld_ok; then
        stop_daemon "$CTLD_PID" slurmctld
        # -i: start even if the saved state cannot be read (e.g. after a crash).
        slurmctld -i || die 1 "slurmctld failed to start" "$CTLD_LOG"
        local i
        for ((i = 0; i < 150; i++)); do
            ctld_ok && break
            sleep 0.2
        done
        ctld_ok || die 1 "slurmctld does not answer 'scontrol ping' after 30 s" "$CTLD_LOG"
    fi
    if ! pid_alive "$SLURMD_PID" slurmd; then
        stop_daemon "$SLURMD_PID" slurmd
        slurmd -N "$NODE" || die 1 "slurmd failed to start" "$SLURMD_LOG"
    fi
}

# Wait (up to 60 s) for the node to be idle; resume it when it is down or drained.
wait_node_idle() {
    local i state
    for ((i = 0; i < 300; i++)); do
        state=$(node_state)
        node_ok && return 0
        case "$state" in
            down | drain* | drained | fail*)
                # Responding (no '*') but down or drained, e.g. from an earlier run.
                scontrol update nodename="$NODE" state=resume 2>/dev/null || true
                ;;
        esac
        pid_alive "$SLURMD_PID" slurmd || die 1 "slurmd exited" "$SLURMD_LOG"
        sleep 0.2
    done
    die 1 "node $NODE is '$state' after 60 s, not idle ($(scontrol show node "$NODE" 2>/dev/null | sed -n 's/^ *\(Reason=.*\)/\1/p'))" "$SLURMD_LOG"
}

# A job step and a batch job both run to the end.
prove_jobs() {
    local out id i state=""
    out=$(timeout 60 srun -N1 -n1 true 2>&1) ||
        die 1 "srun -N1 -n1 true failed: $(echo "$out" | tail -n1)" "$SLURMD_LOG"
    id=$(timeout 30 sbatch --parsable --wrap true -o /dev/null 2>&1) ||
        die 1 "sbatch failed: $id" "$CTLD_LOG"
    id=${id%%;*}
    for ((i = 0; i < 300; i++)); do
        state=$(scontrol -o show job "$id" 2>/dev/null | sed -n 's/.*JobState=\([A-Z_]*\).*/\1/p')
        case "$state" in
            COMPLETED) return 0 ;;
            FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL | DEADLINE)
                die 1 "test batch job $id ended $state" "$SLURMD_LOG" ;;
        esac
        sleep 0.2
    done
    die 1 "test batch job $id is ${state:-unknown}, not COMPLETED, after 60 s" "$CTLD_LOG"
}

# ---------------------------------------------------------------------------- commands

# The daemons talk over 127.0.0.1 (NodeAddr, SlurmctldHost=name(addr)), but srun and
# slurmd still look up this machine's own name: where it does not resolve (some
# containers), it is added to /etc/hosts as 127.0.0.1, once.
ensure_hostname_resolves() {
    getent hosts "$NODE" >/dev/null 2>&1 && return 0
    echo "127.0.0.1 $NODE  # added by harness tests/slurm/cluster.sh" >>/etc/hosts
    say "added '127.0.0.1 $NODE' to /etc/hosts" >&2
}

cmd_up() {
    install_packages
    ensure_hostname_resolves
    start_munge
    local changed
    changed=$(install_conf)
    if [[ -z $changed ]] && cluster_ok; then
        # Already up with this configuration: no test jobs, which could wait behind
        # the user's own on a busy node.
        say "slurm up: node $NODE, $(nproc) CPUs"
        return 0
    fi
    if [[ -n $changed ]]; then
        # A new configuration: restart whatever runs with the old one.
        stop_daemon "$SLURMD_PID" slurmd &
        stop_daemon "$CTLD_PID" slurmctld &
        wait
    fi
    start_slurm
    wait_node_idle
    prove_jobs
    say "slurm up: node $NODE, $(nproc) CPUs"
}

cmd_down() {
    local ids i
    if command -v squeue >/dev/null 2>&1 && ctld_ok; then
        ids=$(timeout 10 squeue -h -o %i 2>/dev/null || true)
        if [[ -n $ids ]]; then
            # shellcheck disable=SC2086
            timeout 10 scancel $ids 2>/dev/null || true
            # Wait (up to KillWait + a bit) for them to leave the queue's live states.
            for ((i = 0; i < 75; i++)); do
                [[ -z "$(timeout 10 squeue -h -t PD,R,CG,S -o %i 2>/dev/null)" ]] && break
                sleep 0.2
            done
        fi
    fi
    # Each daemon takes about 2 s to exit on TERM: stop them side by side. slurmstepd:
    # job steps left behind by a slurmd that is gone.
    stop_daemon "$SLURMD_PID" slurmd &
    stop_daemon "$CTLD_PID" slurmctld &
    stop_daemon /nonexistent slurmstepd &
    stop_daemon "$MUNGE_PID" munged &
    wait
    say "slurm down"
}

cmd_status() {
    if ! command -v sbatch >/dev/null 2>&1; then
        say "down: slurm is not installed"
        return 1
    fi
    local why=""
    if ! munge_ok; then
        why="munged does not answer"
    elif ! ctld_ok; then
        why="slurmctld does not answer"
    elif ! pid_alive "$SLURMD_PID" slurmd; then
        why="slurmd is not running"
    elif ! node_ok; then
        why="node $NODE is '$(node_state)'"
    fi
    if [[ -n $why ]]; then
        say "down: $why"
        return 1
    fi
    say "up: node $NODE ($(node_state)), $(nproc) CPUs"
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *)
        echo "usage: $PROG up|down|status" >&2
        exit 2
        ;;
esac
