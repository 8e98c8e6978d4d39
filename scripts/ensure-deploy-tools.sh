#!/usr/bin/env bash
# Tools the deployment tests use, from Debian's packages when missing:
#   docker-compose  validates docker-compose.yml (`docker-compose config`) without an engine
#   nginx           runs nginx.conf in front of the real gateway (tests/e2e/test_nginx_edge.py),
#                   and balances the replicated stack (tests/e2e/test_replicas.py)
#   redis-server    the replicated stack's shared rate-limit counters (a server per run)
#   promtool        checks deploy/observability's Prometheus config and alert rules and runs
#                   their unit tests (Debian's prometheus package; its server is not started)
# kubectl (with its built-in kustomize) is not packaged by Debian: the Kubernetes tests
# skip, saying so, where it is missing. Idempotent.
set -euo pipefail

export PATH="$PATH:/usr/sbin:/sbin"
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v nginx >/dev/null 2>&1 || missing+=(nginx)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)

if [ "${#missing[@]}" -gt 0 ]; then
  echo "Installing Debian's ${missing[*]}" >&2
  as_root apt-get update -qq
  # policy-rc.d keeps the packages from starting a system nginx on port 80, a Redis on 6379
  # or a Prometheus on 9090: the tests run their own nginx and Redis on free ports, and
  # need only promtool.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
    as_root chmod 755 "$policy"
    trap 'as_root rm -f "$policy"' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
  # ... nor at the next boot.
  if [[ " ${missing[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
    as_root systemctl disable prometheus.service >/dev/null 2>&1 || true
  fi
  if [[ " ${missing[*]} " == *" redis-server "* ]] && [ -d /run/systemd/system ]; then
    as_root systemctl disable redis-server.service >/dev/null 2>&1 || true
  fi
fi
echo "docker-compose $(docker-compose version --short 2>/dev/null || echo '?'), $(nginx -v 2>&1)," \
  "$(promtool --version 2>/dev/null | head -n 1)" >&2
