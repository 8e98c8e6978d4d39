#!/bin/sh
# Prints the broker's definitions (RabbitMQ's JSON format, loaded at boot): one user per
# service, allowed to publish only its own event types and to read only its own queues,
# and the events topology, declared before any service starts (see "Topology" below).
# Each password comes from <SERVICE>_RABBITMQ_PASSWORD (USER_SERVICE_RABBITMQ_PASSWORD,
# ...); it also goes into that service's RABBITMQ_URL, so it must be URL-safe.
#
#   USER_SERVICE_RABBITMQ_PASSWORD=... sh kubernetes/overlays/dev/rabbitmq/definitions.sh > definitions.json
#
# RABBITMQ_VHOST (default /) is the virtual host the permissions are for.
#
# What each kind of service needs (RabbitMQ's access control table):
# - every service declares the events exchange (and its alternate exchange and queue)
#   at start-up: configure on them, write on the alternate exchange, read on both;
# - a producer publishes on the events exchange: write on it, and a topic permission
#   that lets its routing keys (the event types) be only its own resource's;
# - a consumer declares, binds and reads `<service>.events` and `<service>.events.dlq`,
#   needs write on the dead-letter exchange (a queue that dead-letters into it must) and
#   read on the exchanges it binds to, and a topic permission limits its bindings to
#   the types it consumes. It has no write on the events exchange: it publishes nothing.
# The administrator (RABBITMQ_DEFAULT_USER, password RABBITMQ_DEFAULT_PASS: RabbitMQ
# creates no default user when it loads definitions) may do anything: the management
# UI, and replaying dead letters (`python -m eventbus.dlq replay` publishes as the
# original producer did, which no consumer's login may).
set -eu

exchange='ecommerce[.]events'
vhost=${RABBITMQ_VHOST:-/}
case "$vhost" in
    *[!A-Za-z0-9._/-]* | '') echo "definitions.sh: RABBITMQ_VHOST is not a plain name" >&2; exit 1 ;;
esac
shared="^${exchange}([.]unroutable)?\$"

password() {
    value=$(printenv "$1" || true)
    case "$value" in
        '') echo "definitions.sh: $1 is not set" >&2; exit 1 ;;
        *[!A-Za-z0-9._~-]*)
            echo "definitions.sh: $1 may hold only A-Z a-z 0-9 . _ ~ - (it goes into a URL)" >&2
            exit 1 ;;
    esac
    printf '%s' "$value"
}

# A consumer's line: <service> <the resources whose event types it consumes>.
consumer() {
    own="$1[.]events([.]dlq)?"
    all="^(${exchange}([.](dlx|unroutable))?|${own})\$"
    echo "$1 $(echo "$1" | tr a-z A-Z)_RABBITMQ_PASSWORD - $all" \
        "^(${exchange}[.](dlx|unroutable)|${own})\$ $all ^\$ ^($2)[.]"
}
admin=${RABBITMQ_DEFAULT_USER:-admin}
case "$admin" in
    *[!A-Za-z0-9._~-]* | '')
        echo "definitions.sh: RABBITMQ_DEFAULT_USER may hold only A-Z a-z 0-9 . _ ~ -" >&2
        exit 1 ;;
esac
# One line per user: name, password variable, tags ("-": none), configure, write, read
# (resources), then the topic permissions on the events exchange: write (the routing
# keys it may publish with) and read (the binding keys it may bind its queue with).
table=$(
    echo "$admin RABBITMQ_DEFAULT_PASS administrator .* .* .* .* .*"
    echo "user_service USER_SERVICE_RABBITMQ_PASSWORD - $shared $shared $shared ^user[.] ^\$"
    echo "product_service PRODUCT_SERVICE_RABBITMQ_PASSWORD - $shared $shared $shared ^product[.] ^\$"
    echo "order_service ORDER_SERVICE_RABBITMQ_PASSWORD - $shared $shared $shared ^order[.] ^\$"
    consumer inventory_service 'product|order'
    consumer notification_service 'user|product|order'
)

# each users|permissions|topic_permissions: that array's entries, one per service.
each() {
    separator=''
    echo "$table" | while read -r name variable tags configure write read topic_write topic_read; do
        printf '%s\n    ' "$separator"
        case "$1" in
            users)
                printf '{"name": "%s", "password": "%s", "tags": "%s"}' \
                    "$name" "$(password "$variable")" "${tags#-}" ;;
            permissions)
                printf '{"user": "%s", "vhost": "%s", "configure": "%s", "write": "%s", "read": "%s"}' \
                    "$name" "$vhost" "$configure" "$write" "$read" ;;
            topic_permissions)
                printf '{"user": "%s", "vhost": "%s", "exchange": "ecommerce.events", "write": "%s", "read": "%s"}' \
                    "$name" "$vhost" "$topic_write" "$topic_read" ;;
        esac
        separator=','
    done
}

# Topology: the exchanges, queues and bindings the services declare at start-up
# (eventbus/broker.py), with the same arguments (RabbitMQ refuses a declaration that
# differs, and a test compares the two). Declared here too, so that the consumers'
# queues exist from the broker's first boot: an event published before its consumer
# first started would otherwise find no queue bound and go to the unroutable queue,
# where nobody consumes it (the admin's welcome at a first `up`, say).
# One line per consuming service: its name, then the event types its queue is bound to.
consumers=$(
    echo inventory_service order.cancelled order.refunded \
        product.created product.updated
    echo notification_service order.cancelled order.confirmed order.created \
        order.delivered order.refunded order.shipped product.created product.updated \
        user.registered
)
unroutable='ecommerce.events.unroutable'
dlx='ecommerce.events.dlx'

exchange_entry() {  # name type arguments
    printf '{"name": "%s", "vhost": "%s", "type": "%s", "durable": true, "auto_delete": false, "internal": false, "arguments": %s}' \
        "$1" "$vhost" "$2" "$3"
}
queue_entry() {  # name arguments
    printf '{"name": "%s", "vhost": "%s", "durable": true, "auto_delete": false, "arguments": %s}' \
        "$1" "$vhost" "$2"
}
binding_entry() {  # source queue routing-key
    printf '{"source": "%s", "vhost": "%s", "destination": "%s", "destination_type": "queue", "routing_key": "%s", "arguments": {}}' \
        "$1" "$vhost" "$2" "$3"
}

# each exchanges|queues|bindings: that array's entries.
topology() {
    case "$1" in
        exchanges)
            exchange_entry ecommerce.events topic "{\"alternate-exchange\": \"$unroutable\"}"
            printf ',\n    '
            exchange_entry "$unroutable" fanout '{}'
            printf ',\n    '
            exchange_entry "$dlx" direct '{}'
            return ;;
        queues)
            queue_entry "$unroutable" \
                '{"x-max-length": 100000, "x-overflow": "drop-head", "x-message-ttl": 604800000}' ;;
        bindings)
            binding_entry "$unroutable" "$unroutable" "$unroutable" ;;
    esac
    echo "$consumers" | while read -r service types; do
        queue="$service.events"
        printf ',\n    '
        case "$1" in
            queues)
                queue_entry "$queue" "{\"x-queue-type\": \"quorum\", \"x-delivery-limit\": 4, \"x-dead-letter-exchange\": \"$dlx\", \"x-dead-letter-routing-key\": \"$queue\"}"
                printf ',\n    '
                queue_entry "$queue.dlq" '{"x-queue-type": "quorum"}' ;;
            bindings)
                binding_entry "$dlx" "$queue.dlq" "$queue"
                for type in $types; do
                    printf ',\n    '
                    binding_entry ecommerce.events "$queue" "$type"
                done ;;
        esac
    done
}

# Every password checked first, here: a failure inside `each` (a pipeline) would not
# stop the script.
for variable in $(echo "$table" | cut -d ' ' -f 2); do
    password "$variable" >/dev/null
done

printf '{\n  "vhosts": [{"name": "%s"}]' "$vhost"
for array in users permissions topic_permissions; do
    printf ',\n  "%s": [' "$array"
    each "$array"
    printf '\n  ]'
done
for array in exchanges queues bindings; do
    printf ',\n  "%s": [\n    ' "$array"
    topology "$array"
    printf '\n  ]'
done
printf '\n}\n'
