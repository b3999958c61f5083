#!/usr/bin/env bash
# Installs what the browser tests (tests/host/test_browser_editor.py) need: Chromium and its driver from the system's
# packages (Debian/Ubuntu: chromium, chromium-driver), and the selenium package into the given
# Python environment. Selenium drives the system's chromedriver; no browser is downloaded.
# Usage: bash tools/browser_deps.sh [PYTHON]   (default: python3)
set -euo pipefail
python=${1:-python3}

if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1 \
  || ! command -v chromedriver >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q chromium chromium-driver
  else
    echo "browser tests: install Chromium and chromedriver with your system's package manager" >&2
    exit 1
  fi
fi
"$python" -m pip install -q --disable-pip-version-check "selenium>=4.20"
