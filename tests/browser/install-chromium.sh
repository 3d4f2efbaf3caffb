#!/usr/bin/env bash
# Install Chromium from Debian's packages for the headless HTML-report test.
# Idempotent: does nothing when a chromium binary is already on PATH.
# Needs root (CI and developer machines run as root); `apt-get update` runs once, before the install.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    echo "chromium already installed: $(command -v chromium || command -v chromium-browser)"
    exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "install-chromium.sh: need root (or sudo) for apt-get" >&2; exit 1; }
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends chromium fonts-dejavu-core
command -v chromium
chromium --version || true
