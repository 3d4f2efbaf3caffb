#!/usr/bin/env bash
# Start a one-node Slurm cluster on loopback for the tests: munge, MariaDB, slurmdbd, slurmctld, slurmd.
#
#   bash tests/clusters/slurm-up.sh      # installs Debian's packages when missing, configures, starts, waits
#   bash tests/clusters/slurm-down.sh    # stops what this script started (by the pids it saved)
#
# Runs as root (Debian 12, no systemd needed). Idempotent: a daemon already running is left alone.
# State lives in $BT_SLURM_LAB (default /var/lib/benchmark-tracker/slurm-lab), out of reach of /tmp clean-ups.
# The configuration goes to /etc/slurm (the default location, so every client finds it).
# See docs/slurm.md and /work/shared/notes/slurm-test-cluster.md for the why of each setting.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
LAB="${BT_SLURM_LAB:-/var/lib/benchmark-tracker/slurm-lab}"
CONF_DIR=/etc/slurm
NODE="$(hostname -s)"
READY_TIMEOUT_S="${BT_SLURM_READY_TIMEOUT_S:-60}"

say() { echo "slurm-up: $*" >&2; }
die() { echo "slurm-up: ERROR: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (it installs packages and starts daemons)"

LOG_HINT="logs in $LAB/log"
# shellcheck source=common.sh
. "$HERE/common.sh"

# A pid from a pid file that is alive and runs the expected program.
live_pid() {  # file comm
    local pid
    pid="$(cat "$1" 2>/dev/null || true)"
    [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] && [ "$(cat "/proc/$pid/comm")" = "$2" ] && echo "$pid"
}

mark_started() { echo "$1" >> "$LAB/run/started-by-us"; }

# --- packages -----------------------------------------------------------------
PACKAGES="slurmctld slurmd slurm-client munge slurmdbd mariadb-server"
install_packages $PACKAGES

# --- folders and configuration ------------------------------------------------
install -d -m 755 "$LAB" "$LAB/state" "$LAB/spool" "$LAB/log" "$LAB/run"
install -d -o mysql -g mysql "$LAB/mysqlrun" /run/mysqld
install -d -o munge -g munge -m 755 /run/munge
CPUS="$(nproc)"
MEM="$(/usr/sbin/slurmd -C 2>/dev/null | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')"
[ -n "$MEM" ] || MEM=2048
install -d -m 755 "$CONF_DIR"
render() {  # template target mode
    local tmp
    tmp="$(mktemp "$2.XXXXXX")"
    sed -e "s|@LAB@|$LAB|g" -e "s|@NODE@|$NODE|g" -e "s|@CPUS@|$CPUS|g" -e "s|@MEM@|$MEM|g" "$1" > "$tmp"
    chmod "$3" "$tmp"
    if [ -f "$2" ] && cmp -s "$tmp" "$2"; then rm -f "$tmp"; return 1; fi
    mv "$tmp" "$2"
}
changed=""
render "$HERE/slurm/slurm.conf.in" "$CONF_DIR/slurm.conf" 644 && changed=1 || true
render "$HERE/slurm/slurmdbd.conf.in" "$CONF_DIR/slurmdbd.conf" 600 && changed=1 || true
chown root:root "$CONF_DIR/slurmdbd.conf"
if [ -n "$changed" ]; then  # a changed configuration needs fresh Slurm daemons
    for d in slurmd slurmctld slurmdbd; do
        pid="$(live_pid "$LAB/run/$d.pid" "$d" || true)"
        if [ -n "$pid" ]; then
            say "configuration changed: restarting $d"
            kill "$pid"
            for _ in $(seq 75); do [ -e "/proc/$pid" ] || break; sleep 0.2; done
        fi
    done
fi

# --- 1. munge -----------------------------------------------------------------
[ -s /etc/munge/munge.key ] || { mungekey --create --keyfile=/etc/munge/munge.key; chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    say "starting munged"
    runuser -u munge -- /usr/sbin/munged
    mark_started munged
    wait_for munged sh -c 'munge -n | unmunge'
fi

# --- 2. MariaDB (private datadir, socket only, no TCP) ------------------------
if ! mariadb -uroot -e 'select 1' >/dev/null 2>&1; then
    if [ ! -d "$LAB/mysql/mysql" ]; then
        say "initialising the MariaDB datadir"
        install -d -o mysql -g mysql "$LAB/mysql"
        mariadb-install-db --user=mysql --datadir="$LAB/mysql" --auth-root-authentication-method=socket \
            --skip-test-db >"$LAB/log/mariadb-install.out" 2>&1 || die "mariadb-install-db failed ($LAB/log/mariadb-install.out)"
    fi
    say "starting mariadbd"
    setsid /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$LAB/mysql" \
        --socket=/run/mysqld/mysqld.sock --skip-networking \
        --pid-file="$LAB/mysqlrun/mariadbd.pid" --log-error="$LAB/mysqlrun/mariadbd.err" \
        --innodb-buffer-pool-size=128M --innodb-lock-wait-timeout=900 </dev/null >"$LAB/log/mariadbd.out" 2>&1 &
    echo $! > "$LAB/run/mariadbd.pid"
    mark_started mariadbd
    wait_for mariadb mariadb -uroot -e 'select 1'
fi

# --- 3. slurmdbd --------------------------------------------------------------
if [ -z "$(live_pid "$LAB/run/slurmdbd.pid" slurmdbd || true)" ]; then
    say "starting slurmdbd"
    /usr/sbin/slurmdbd
    mark_started slurmdbd
fi
wait_for slurmdbd sacctmgr -n list cluster

# --- 4. slurmctld -------------------------------------------------------------
if [ -z "$(live_pid "$LAB/run/slurmctld.pid" slurmctld || true)" ]; then
    say "starting slurmctld"
    /usr/sbin/slurmctld
    mark_started slurmctld
fi
wait_for slurmctld sh -c 'scontrol ping | grep -q UP'

# --- 5. slurmd ----------------------------------------------------------------
if [ -z "$(live_pid "$LAB/run/slurmd.pid" slurmd || true)" ]; then
    say "starting slurmd"
    started_at="$(date +%s)"
    /usr/sbin/slurmd -N "$NODE"
    mark_started slurmd
else
    started_at=0
fi
slurmd_registered() {
    local t
    t="$(scontrol show node "$NODE" | sed -n 's/.*SlurmdStartTime=\([^ ]*\).*/\1/p')"
    [ -n "$t" ] && [ "$t" != None ] && [ "$(date -d "$t" +%s)" -ge "$((started_at - 1))" ]
}
wait_for "slurmd registration" slurmd_registered
node_state() { sinfo -h -n "$NODE" -o %T; }
if node_state | grep -Eq 'down|drain|fail'; then
    scontrol update nodename="$NODE" state=resume || true
fi
wait_for "node $NODE" sh -c "sinfo -h -n '$NODE' -o %T | grep -Eqx 'idle|mixed|allocated|completing'"

# --- 6. accounting works end to end ---------------------------------------------
wait_for accounting sh -c 'sacct -n -X >/dev/null && sacctmgr -n -P list cluster format=cluster | grep -qx local'
say "ready: node $NODE ($CPUS CPUs, ${MEM} MB), partition debug, feature bttest; state in $LAB"
