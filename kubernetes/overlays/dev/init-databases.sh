#!/usr/bin/env bash
# One database and one login role per service, so that no service can read another's
# data. The official postgres image runs this once, when its data volume is first
# initialised (/docker-entrypoint-initdb.d/); docker-compose.yml mounts it there and the
# Kubernetes dev overlay ships a copy in a ConfigMap (kustomize reads no file outside
# its directory; a test keeps the two identical).
#
#   SERVICE_DATABASES    names, space- or comma-separated: a database and a role each
#   SERVICE_DB_PASSWORD  the roles' password; <NAME>_DB_PASSWORD, when set, wins for one
#
# Idempotent: existing roles and databases are left alone.
set -euo pipefail

: "${SERVICE_DATABASES:?SERVICE_DATABASES must list the databases to create}"
: "${SERVICE_DB_PASSWORD:?SERVICE_DB_PASSWORD must be set}"

for name in ${SERVICE_DATABASES//,/ }; do
  if [[ ! $name =~ ^[a-z_][a-z0-9_]{0,62}$ ]]; then
    echo "init-databases: '$name' is not a valid database name" >&2
    exit 1
  fi
  own_password_variable="${name^^}_DB_PASSWORD"
  password="${!own_password_variable:-$SERVICE_DB_PASSWORD}"
  psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" \
    --dbname "${POSTGRES_DB:-postgres}" --set=name="$name" --set=password="$password" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN PASSWORD %L', :'name', :'password')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'name')\gexec
SELECT format('CREATE DATABASE %I OWNER %I', :'name', :'name')
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'name')\gexec
-- Only the owner (and superusers) may connect: PUBLIC has CONNECT by default.
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', :'name')\gexec
SQL
  echo "init-databases: database and role '$name' ready"
done
