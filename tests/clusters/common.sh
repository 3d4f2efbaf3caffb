# Shared by the *-up.sh scripts (sourced; they define say, die, READY_TIMEOUT_S and LOG_HINT first).

# install_packages PKG...: install the Debian packages that are missing, without starting their daemons.
install_packages() {
    local p missing="" made_policy=""
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
    done
    [ -n "$missing" ] || return 0
    say "installing$missing"
    if [ ! -e /usr/sbin/policy-rc.d ]; then  # postinst scripts must not start daemons (no init, no config)
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && made_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends -o DPkg::Lock::Timeout=300 "$@" >/dev/null \
        || { apt-get update -o DPkg::Lock::Timeout=300 >/dev/null && \
             apt-get install -y --no-install-recommends -o DPkg::Lock::Timeout=300 "$@" >/dev/null; } \
        || { [ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d; die "apt-get install failed"; }
    [ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d
}

# wait_for WHAT COMMAND...: run COMMAND every 0.2 s until it succeeds, up to READY_TIMEOUT_S.
wait_for() {
    local what="$1"; shift
    local deadline=$(( $(date +%s) + READY_TIMEOUT_S ))
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$deadline" ] || die "$what not ready after ${READY_TIMEOUT_S}s ($LOG_HINT)"
        sleep 0.2
    done
}
