#!/usr/bin/env bash
# Make sure a local PostgreSQL is running with the role the integration tests use
# (shop/shop, allowed to create databases). Installs Debian's package when missing.
set -euo pipefail

ROLE=${TEST_POSTGRES_ROLE:-shop}
PASSWORD=${TEST_POSTGRES_PASSWORD:-shop}

# The server started below must not inherit this script's descriptors: a lock its caller
# holds through one (flock on a descriptor, as a shared test runner does) would stay held
# for as long as the server runs. Bash reads this script through descriptor 255.
for fd in $(ls /proc/$$/fd); do
  if [ "$fd" -gt 2 ] && [ "$fd" -lt 255 ]; then eval "exec $fd>&-" 2>/dev/null || true; fi
done

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v pg_lsclusters >/dev/null 2>&1; then
  echo "PostgreSQL is not installed: installing Debian's package" >&2
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql >/dev/null
fi

read -r version cluster port status _ < <(pg_lsclusters --no-header | head -n 1)
if [ "$status" != "online" ]; then
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" "$cluster" start
fi

psql_as_postgres() { as_root su postgres -c "psql -p $port -v ON_ERROR_STOP=1 -qtA $*"; }
for _ in $(seq 1 30); do
  psql_as_postgres "-c 'select 1'" >/dev/null 2>&1 && break
  sleep 0.5
done
# Every service has its own pool (20 + 10 overflow by default) and the test stacks run
# them all against this one server: the stock 100 connections are too few.
if [ "$(psql_as_postgres "-c 'show max_connections'")" -lt 400 ]; then
  psql_as_postgres "-c 'alter system set max_connections = 400'"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" "$cluster" restart
  for _ in $(seq 1 30); do
    psql_as_postgres "-c 'select 1'" >/dev/null 2>&1 && break
    sleep 0.5
  done
fi
if [ "$(psql_as_postgres "-c \"select 1 from pg_roles where rolname = '$ROLE'\"")" != "1" ]; then
  psql_as_postgres "-c \"create role $ROLE login createdb password '$PASSWORD'\""
fi
echo "PostgreSQL $version/$cluster is up on port $port (role $ROLE)" >&2
