#!/usr/bin/env bash
# Install headless Chromium for the HTML-report render test (tests/test_html_report.py); safe to
# run again (idempotent): does nothing when `chromium` is already on PATH.
#   chromium  Debian package (the test runs `chromium --headless --no-sandbox --dump-dom ...`)
# Usage: scripts/install_chromium.sh   (uses sudo when not root)
set -euo pipefail

if ! command -v chromium >/dev/null 2>&1; then
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_chromium: chromium missing and apt-get not found; install chromium" >&2
    exit 1
  fi
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q
  $SUDO apt-get install -y -q --no-install-recommends chromium
fi
chromium --version
