#!/usr/bin/env bash
# The browser the storefront's tests drive (tests/e2e/test_storefront.py): Debian's
# Chromium, from Debian's packages when missing. Playwright drives it as it is; its own
# browser download is never used. Idempotent.
set -euo pipefail

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if [ ! -x /usr/bin/chromium ]; then
  echo "Installing Debian's chromium" >&2
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends \
    chromium fonts-liberation >/dev/null
fi
echo "$(/usr/bin/chromium --version 2>/dev/null)" >&2
