#!/usr/bin/env bash
# Start a real OAR 2.5.9 server and node (Debian's packages, PostgreSQL) on loopback for the tests.
#
#   bash tests/clusters/oar-up.sh      # installs the packages when missing, configures, starts, smoke-tests
#   bash tests/clusters/oar-down.sh    # stops what this script started (by the pids it saved)
#
# Runs as root (Debian 12, no systemd needed). Idempotent: what already runs is checked and left alone.
# See /work/shared/notes/oar-test-server.md for the why of each step. Two safety rules come first:
#   1. OAR's job resource manager runs `find /tmp/. /dev/shm/. /var/tmp/. -user <owner> -delete` as root at
#      the end of every job. It is disabled in oar.conf BEFORE the server starts, and checked again at every run.
#   2. Jobs are never owned by root: stock admission rule #2 stays, and jobs are submitted as $BT_OAR_USER
#      (default oartest) through the shims in $LAB/shims (put that folder first on PATH in the test process).
# State lives in $BT_OAR_LAB (default /var/lib/benchmark-tracker/oar-lab), out of reach of /tmp clean-ups.
# Ports (loopback only): PostgreSQL 5432, OAR server 6666, node sshd 6667.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
LAB="${BT_OAR_LAB:-/var/lib/benchmark-tracker/oar-lab}"
JOB_USER="${BT_OAR_USER:-oartest}"
CLUSTER="${BT_OAR_CLUSTER:-chifflet}"   # a Grid'5000 cluster name, so -p "cluster='...'" reads as on G5K
READY_TIMEOUT_S="${BT_OAR_READY_TIMEOUT_S:-60}"
CONF=/etc/oar/oar.conf
PG_VERSION=15

say() { echo "oar-up: $*" >&2; }
die() { echo "oar-up: ERROR: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (it installs packages and starts daemons)"
mkdir -p "$LAB/run" "$LAB/shims"

LOG_HINT="see /var/log/oar.log"
# shellcheck source=common.sh
. "$HERE/common.sh"

tcp_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
live_pid() {  # pidfile, expected substring of the command line
    local pid
    pid="$(cat "$1" 2>/dev/null || true)"
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q -- "$2" && echo "$pid"
}
mark_started() { grep -qx "$1" "$LAB/run/started-by-us" 2>/dev/null || echo "$1" >> "$LAB/run/started-by-us"; }

# --- packages -----------------------------------------------------------------
# python3.11: Debian's interpreter, which the unprivileged job user can run (tests/test_oar_server.py).
PACKAGES="oar-server oar-server-pgsql oar-node oar-user oar-user-pgsql postgresql python3.11"
install_packages $PACKAGES

# --- oar.conf: safety first ------------------------------------------------------
[ -f "$CONF" ] || die "$CONF missing after install"
sed -i -e 's/^DB_BASE_PASSWD=.*/DB_BASE_PASSWD="oar"/' \
       -e 's/^DB_BASE_PASSWD_RO=.*/DB_BASE_PASSWD_RO="oar_ro"/' \
       -e 's/^\(JOB_RESOURCE_MANAGER_PROPERTY_DB_FIELD=.*\)/#\1/' "$CONF"
grep -q '^SCHEDULER_MIN_TIME_BETWEEN_2_CALLS=' "$CONF" \
    || echo 'SCHEDULER_MIN_TIME_BETWEEN_2_CALLS="1"' >> "$CONF"
chown oar "$CONF"; chmod 600 "$CONF"
# The check that matters most: no job resource manager, so no root `find ... -delete` in /tmp after jobs.
if grep -q '^JOB_RESOURCE_MANAGER_PROPERTY_DB_FIELD' "$CONF"; then
    die "JOB_RESOURCE_MANAGER_PROPERTY_DB_FIELD is still enabled in $CONF: refusing to start (OAR would purge /tmp)"
fi
touch /var/log/oar.log && chown oar /var/log/oar.log

# --- patches to stock files (a package upgrade reverts them: re-applied every time) ---
ALMIGHTY=/usr/lib/oar/Almighty
sed -i -e 's/^my \$read_commands_timeout = 10;/my $read_commands_timeout = 1;/' \
       -e 's/^my \$schedulertimeout = 60;/my $schedulertimeout = 5;/' \
       -e "s/IO::Socket::INET->new(LocalPort=>/IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort=>/" \
       "$ALMIGHTY"
grep -q "LocalAddr => '127.0.0.1'" "$ALMIGHTY" || die "could not bind Almighty to loopback (patch of $ALMIGHTY failed)"
# BASH_ENV re-sourced by every bash the job starts (a fork bomb with pyenv), and a .bashrc reading stdin.
printf 'unset BASH_ENV\n[ -r ~/.bashrc ] && source ~/.bashrc </dev/null\n' > /var/lib/oar/.batch_job_bashrc
chown root:oar /var/lib/oar/.batch_job_bashrc; chmod 644 /var/lib/oar/.batch_job_bashrc

# --- PostgreSQL (ours: the Slurm lab uses MariaDB) -------------------------------------
if ! pg_lsclusters -h 2>/dev/null | grep -q "^$PG_VERSION main"; then
    pg_createcluster "$PG_VERSION" main >/dev/null
fi
if ! pg_lsclusters -h | grep -q "^$PG_VERSION main .* online"; then
    pg_ctlcluster "$PG_VERSION" main start
    mark_started postgresql
fi
wait_for "PostgreSQL" tcp_open 5432

# --- database, admission rule, properties, resources -----------------------------------
if ! oar-database --check >/dev/null 2>&1; then
    say "creating the OAR database"
    oar-database --create --db-is-local -y >/dev/null
fi
if ! oaradmissionrules -s 16 -f | grep -q 'origin='; then  # execo always adds -t origin=execo
    rule="$LAB/rule16.pl"
    oaradmissionrules -s 16 -H > "$rule"
    grep -q 'unknown job type' "$rule" || die "admission rule 16 is not the stock job-type check; not patching it"
    sed -i 's|^my @types = (|my @types = (\n    qr/^origin=[\\w.-]+$/,|' "$rule"
    chmod 644 "$rule"
    oaradmissionrules -m 16 -r "$rule" >/dev/null
    oaradmissionrules -s 16 -f | grep -q 'origin=' || die "patching admission rule 16 failed"
fi
existing_props="$(oarproperty -l 2>/dev/null || true)"
for prop in cluster host wattmeter; do
    echo "$existing_props" | grep -qx "$prop" || oarproperty -a "$prop" -c >/dev/null
done
for prop in cpu core gpu_count; do
    echo "$existing_props" | grep -qx "$prop" || oarproperty -a "$prop" >/dev/null
done
if ! oarnodes -l 2>/dev/null | grep -qx localhost; then
    say "adding node localhost (cluster $CLUSTER, 2 cores)"
    for core in 1 2; do
        oarnodesetting -a -h localhost -p host=localhost -p cluster="$CLUSTER" -p deploy=YES -p wattmeter=NO \
            -p gpu_count=0 -p cpu=1 -p core="$core" -p cpuset="$((core - 1))" >/dev/null
    done
fi

# --- the job owner and the client shims --------------------------------------------
id "$JOB_USER" >/dev/null 2>&1 || useradd -m -s /bin/bash "$JOB_USER"
for client in oarsub oarstat oardel oarnodes oarhold oarresume oarwalltime oarsh oarcp; do
    cat > "$LAB/shims/$client" <<EOF
#!/bin/sh
# OAR client as $JOB_USER (root and oar may not own jobs), in Paris time as execo expects.
export TZ=\${OAR_TZ:-Europe/Paris}
if [ "\$(id -u)" = 0 ]; then cd ~$JOB_USER 2>/dev/null || cd /; exec runuser -u $JOB_USER -- /usr/bin/$client "\$@"; fi
exec /usr/bin/$client "\$@"
EOF
    chmod 755 "$LAB/shims/$client"
done

# --- daemons: node sshd (6667), then the server (6666) ---------------------------------
mkdir -p /run/sshd
[ -s /etc/oar/oar_ssh_host_rsa_key ] || ssh-keygen -q -t rsa -N '' -f /etc/oar/oar_ssh_host_rsa_key
if ! live_pid "$LAB/run/sshd.pid" /etc/oar/sshd_config >/dev/null; then
    /usr/sbin/sshd -f /etc/oar/sshd_config -o PidFile="$LAB/run/sshd.pid" -o ListenAddress=127.0.0.1 2>/dev/null
    mark_started sshd
fi
wait_for "OAR node sshd (port 6667)" tcp_open 6667

conf_sum="$(cat "$CONF" "$ALMIGHTY" | md5sum | cut -d' ' -f1)"
server_pid="$(live_pid /var/run/oar-server.pid Almighty || true)"
if [ -n "$server_pid" ] && [ "$(cat "$LAB/run/conf.md5" 2>/dev/null)" != "$conf_sum" ]; then
    say "configuration changed: restarting the OAR server"
    kill "$server_pid"; sleep 2; server_pid=""
fi
if [ -z "$server_pid" ]; then
    TZ=Europe/Paris /usr/sbin/oar-server
    echo "$conf_sum" > "$LAB/run/conf.md5"
    mark_started oar-server
fi
wait_for "OAR server (port 6666)" tcp_open 6666
oarnodesetting -h localhost -s Alive >/dev/null 2>&1 || true  # a crash may have left it Suspected

# --- smoke job: proves server, scheduler, node and the job user -------------------------
PATH="$LAB/shims:$PATH"
out="$(cd / && oarsub -l nodes=1,walltime=0:01:00 true 2>&1)" || die "smoke job refused: $out"
job="$(echo "$out" | sed -n 's/^OAR_JOB_ID=\([0-9]*\).*/\1/p')"
[ -n "$job" ] || die "smoke job: no OAR_JOB_ID in: $out"
smoke_done() { oarstat -s -j "$job" | grep -Eq ': (Terminated|Error)'; }
wait_for "smoke job $job" smoke_done
oarstat -s -j "$job" | grep -q ': Terminated' || die "smoke job $job ended in Error (see /var/log/oar.log)"
say "ready: OAR on 127.0.0.1:6666, node localhost (cluster $CLUSTER), jobs run as $JOB_USER"
say "use: export PATH=$LAB/shims:\$PATH"
