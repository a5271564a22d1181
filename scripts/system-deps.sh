#!/usr/bin/env bash
# Install the Debian packages cashpos needs, only those missing:
#   redis-server (the embedded Redis), and for tests chromium + fonts-nanum (Korean glyphs).
# Usage: scripts/system-deps.sh [run|test]
set -euo pipefail
want=(redis-server)
# tests: a real browser, Korean glyphs for it, and promtool for the alert rules
if [ "${1:-run}" = "test" ]; then want+=(chromium fonts-nanum prometheus); fi
missing=()
for pkg in "${want[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
  || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null; }
