#!/bin/sh
# migrate ALEMBIC_INI [SECONDS]: `alembic -c ALEMBIC_INI upgrade head`, tried again while
# it fails for up to SECONDS (60). The migration container (compose's <service>-migrate, the
# Kubernetes Job) may start while its database is not accepting connections yet (a
# fresh volume, a managed database failing over); a migration that is really broken
# still fails, with alembic's last error, once the time is up.
set -u
ini=${1:?usage: migrate ALEMBIC_INI}
deadline=$(( $(date +%s) + ${2:-60} ))
attempt=1
until alembic -c "$ini" upgrade head; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
        echo "migrate: $ini still failing after attempt $attempt, giving up" >&2
        exit 1
    fi
    echo "migrate: attempt $attempt of $ini failed, trying again in 2 s" >&2
    attempt=$((attempt + 1))
    sleep 2
done
