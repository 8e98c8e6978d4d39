#!/usr/bin/env bash
# wrk drives the benchmarks; Debian packages it.
set -euo pipefail
command -v wrk >/dev/null 2>&1 && exit 0
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
as_root apt-get update -qq
DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq wrk >/dev/null
