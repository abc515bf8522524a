#!/usr/bin/env bash
# Installs what the end-to-end UI test (analytics_platform_tests/ops/test_e2e_ui.py) needs
# beyond the Python package: Debian's headless-capable Chromium at /usr/bin/chromium.
# Idempotent and fast when it is already there (no apt-get at all then).
set -euo pipefail

if [ -x /usr/bin/chromium ] && /usr/bin/chromium --version >/dev/null 2>&1; then
  echo "setup_e2e: $(/usr/bin/chromium --version) already installed"
  exit 0
fi

SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "setup_e2e: need root (or sudo) to apt-get install chromium" >&2; exit 1
  fi
fi

export DEBIAN_FRONTEND=noninteractive
# Refresh the package lists only when they are missing or the first install attempt fails
# (a stale list can point at versions the mirror no longer serves).
install() {
  $SUDO apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core >/dev/null
}
if [ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v -e lock -e partial)" ] || ! install; then
  $SUDO apt-get update -q >/dev/null
  install
fi

/usr/bin/chromium --version
