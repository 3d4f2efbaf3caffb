#!/usr/bin/env bash
# Stop what tests/clusters/oar-up.sh started: open jobs, the OAR server, the node sshd, PostgreSQL (only if
# oar-up started it), leftover processes of the job user. By pid, never by name. Idempotent.
set -euo pipefail

LAB="${BT_OAR_LAB:-/var/lib/benchmark-tracker/oar-lab}"
JOB_USER="${BT_OAR_USER:-oartest}"
say() { echo "oar-down: $*" >&2; }
[ "$(id -u)" = 0 ] || { echo "oar-down: ERROR: must run as root" >&2; exit 1; }
[ -d "$LAB/run" ] || { say "nothing to stop"; exit 0; }

started() { grep -qx "$1" "$LAB/run/started-by-us" 2>/dev/null; }
live_pid() {  # pidfile, expected substring of the command line
    local pid
    pid="$(cat "$1" 2>/dev/null || true)"
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q -- "$2" && echo "$pid"
}
stop_pid() {  # pid: TERM, then KILL after 5 s
    local pid="$1" i
    kill "$pid" 2>/dev/null || return 0
    for i in $(seq 25); do [ -d "/proc/$pid" ] || return 0; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
}

server_pid="$(live_pid /var/run/oar-server.pid Almighty || true)"
if [ -n "$server_pid" ] && [ -x /usr/bin/oarstat ]; then
    jobs="$(/usr/bin/oarstat 2>/dev/null | awk 'NR>2 {print $1}' | grep -E '^[0-9]+$' || true)"
    if [ -n "$jobs" ]; then
        say "deleting open jobs: $(echo $jobs)"
        for j in $jobs; do /usr/bin/oardel "$j" >/dev/null 2>&1 || true; done
        sleep 3
    fi
fi
if [ -n "$server_pid" ]; then say "stopping the OAR server ($server_pid)"; stop_pid "$server_pid"; fi
sshd_pid="$(live_pid "$LAB/run/sshd.pid" /etc/oar/sshd_config || true)"
if [ -n "$sshd_pid" ]; then say "stopping the node sshd ($sshd_pid)"; stop_pid "$sshd_pid"; fi
if id "$JOB_USER" >/dev/null 2>&1; then
    for pid in $(pgrep -u "$JOB_USER" || true); do stop_pid "$pid"; done
fi
if started postgresql && command -v pg_ctlcluster >/dev/null; then
    say "stopping PostgreSQL"
    pg_ctlcluster 15 main stop -m fast || true
fi
rm -f "$LAB/run/started-by-us"
say "stopped"
