#!/usr/bin/env bash
# Stop the test cluster started by tests/clusters/slurm-up.sh: cancel jobs, then stop the daemons it started,
# by the pids it saved (checked against /proc/PID/comm), SIGKILL after 15 s. Idempotent.
set -uo pipefail

LAB="${BT_SLURM_LAB:-/var/lib/benchmark-tracker/slurm-lab}"
say() { echo "slurm-down: $*" >&2; }

[ -d "$LAB/run" ] || { say "nothing to stop ($LAB/run does not exist)"; exit 0; }

comm_of() { cat "/proc/$1/comm" 2>/dev/null || true; }

pid_of() {  # daemon -> pid, only when alive and really that program
    local file pid
    case "$1" in
        munged) file=/run/munge/munged.pid ;;
        mariadbd) file="$LAB/mysqlrun/mariadbd.pid"; [ -s "$file" ] || file="$LAB/run/mariadbd.pid" ;;
        *) file="$LAB/run/$1.pid" ;;
    esac
    pid="$(cat "$file" 2>/dev/null || true)"
    [ -n "$pid" ] && [ "$(comm_of "$pid")" = "$1" ] && echo "$pid"
}

stop() {  # daemon
    local pid
    pid="$(pid_of "$1" || true)"
    [ -n "$pid" ] || return 0
    say "stopping $1 (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 75); do
        [ "$(comm_of "$pid")" = "$1" ] || return 0
        sleep 0.2
    done
    say "$1 (pid $pid) ignored SIGTERM for 15 s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
}

# Jobs first, bounded wait for an empty queue.
if [ -n "$(pid_of slurmctld || true)" ]; then
    scancel --user=root --full 2>/dev/null || true
    scancel --state=PENDING 2>/dev/null || true
    for _ in $(seq 50); do
        [ -z "$(squeue -h 2>/dev/null)" ] && break
        sleep 0.2
    done
fi

started="$(cat "$LAB/run/started-by-us" 2>/dev/null || true)"
for d in slurmd slurmctld slurmdbd mariadbd munged; do
    case "$d" in
        munged|mariadbd)  # shared daemons: only when this script's counterpart started them
            echo "$started" | grep -qx "$d" || { [ -n "$(pid_of "$d" || true)" ] && say "leaving $d alone (not started by slurm-up.sh)"; continue; } ;;
    esac
    stop "$d"
done
rm -f "$LAB/run/started-by-us"

left="$(pgrep -x slurmstepd || true)"
[ -z "$left" ] || say "warning: slurmstepd still running (pids: $(echo $left)): a job outlived slurmd"
say "stopped"
