#!/bin/sh
# As the official image does: without a configuration file Redis would refuse clients
# from other containers (protected mode); it is reached on a private network only.
set -eu
if [ "${1:-}" = redis-server ]; then
  shift
  exec redis-server --protected-mode no "$@"
fi
exec "$@"
