#!/usr/bin/env bash
# Make sure a local RabbitMQ is running: what `make run` and the tests use (guest/guest on
# 127.0.0.1:5672, the default RABBITMQ_URL). Installs Debian's package when missing, starts
# the node detached when it is not running, and waits until it has booted. Idempotent.
set -euo pipefail

# The server started below must not inherit this script's descriptors: a lock its caller
# holds through one (flock on a descriptor, as a shared test runner does) would stay held
# for as long as the server runs. Bash reads this script through descriptor 255.
for fd in $(ls /proc/$$/fd); do
  if [ "$fd" -gt 2 ] && [ "$fd" -lt 255 ]; then eval "exec $fd>&-" 2>/dev/null || true; fi
done

export PATH="$PATH:/usr/sbin:/sbin"
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v rabbitmq-server >/dev/null 2>&1; then
  echo "RabbitMQ is not installed: installing Debian's package" >&2
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq rabbitmq-server >/dev/null
fi

if ! as_root rabbitmqctl -q ping >/dev/null 2>&1; then
  echo "Starting RabbitMQ" >&2
  as_root rabbitmq-server -detached
elif ! as_root rabbitmq-diagnostics -q check_running >/dev/null 2>&1; then
  # The node is up but its application is stopped (`rabbitmqctl stop_app`), or still
  # booting (then start_app fails harmlessly and the wait below covers it).
  echo "Starting the RabbitMQ application" >&2
  as_root rabbitmqctl -q start_app >/dev/null 2>&1 || true
fi

# The node answers `await_startup` only once its Erlang VM is up: retry until then.
for _ in $(seq 1 60); do
  if as_root rabbitmqctl -q await_startup --timeout 60 >/dev/null 2>&1; then
    # A broker that has ecommerce.events from before the exchange had its alternate
    # exchange argument keeps it without one (arguments never change); this policy gives
    # it that alternate exchange in place (see eventbus.broker.declare_exchange).
    as_root rabbitmqctl -q set_policy --apply-to exchanges events-alternate-exchange \
      '^ecommerce\.events$' '{"alternate-exchange": "ecommerce.events.unroutable"}' >/dev/null
    echo "RabbitMQ is up on 127.0.0.1:5672" >&2
    exit 0
  fi
  sleep 1
done
echo "RabbitMQ did not start; see /var/log/rabbitmq/" >&2
exit 1
