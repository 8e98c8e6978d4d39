#!/usr/bin/env bash
# Install what a fresh machine lacks to build the workspace: uv (from PyPI) and the
# locked environment. Prints the command that runs uv.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v uv >/dev/null 2>&1; then
  UV=uv
elif python3 -m uv --version >/dev/null 2>&1; then
  UV="python3 -m uv"
else
  echo "uv is missing: installing it from PyPI" >&2
  python3 -m pip install --quiet --disable-pip-version-check uv >&2 \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages uv >&2
  UV="python3 -m uv"
fi
$UV sync --all-packages --frozen --quiet >&2
echo "$UV"
