#!/usr/bin/env bash
# Debian's Chromium for the browser test of the MLflow UI (Playwright drives /usr/bin/chromium; a browser
# download of Playwright's own would fail on this network). Installs it as root when missing.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
    exit 0
fi
if [ "$(id -u)" != 0 ] && ! sudo -n true 2>/dev/null; then
    echo "[chromium] not installed, and installing it needs root: apt-get install chromium" >&2
    exit 1
fi
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }
echo "[chromium] installing Debian's chromium" >&2
export DEBIAN_FRONTEND=noninteractive
as_root apt-get update -qq
as_root apt-get install -y -qq --no-install-recommends chromium >/dev/null
chromium --version >&2
