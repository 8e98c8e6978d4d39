#!/bin/sh
# The broker's entrypoint (docker-compose.yml, the dev cluster): renders the definitions
# (one user per service: definitions.sh, beside this file) from the environment into a
# file only the broker reads, has RabbitMQ load them at every boot (a changed password
# takes effect on a restart), then hands over to the image's own entrypoint.
set -eu
here=$(dirname "$0")
definitions=${RABBITMQ_DEFINITIONS_FILE:-/tmp/rabbitmq-definitions.json}
umask 077
sh "$here/definitions.sh" >"$definitions"
if [ "$(id -u)" = 0 ]; then
    chown rabbitmq:rabbitmq "$definitions"  # the image's entrypoint drops to this user
fi
# An Erlang string: the quotes are part of the value.
RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="${RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS:-} -rabbit load_definitions \"$definitions\""
export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS
exec docker-entrypoint.sh "$@"
