#!/bin/bash
# The official image's settings from the environment: the default login, reachable from
# other containers (not only from localhost, RabbitMQ's rule for `guest`).
set -euo pipefail
cat >/etc/rabbitmq/rabbitmq.conf <<CONF
default_user = ${RABBITMQ_DEFAULT_USER:-guest}
default_pass = ${RABBITMQ_DEFAULT_PASS:-guest}
loopback_users = none
CONF
exec "$@"
