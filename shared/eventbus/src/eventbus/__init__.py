"""Events over RabbitMQ: an outbox written in the business transaction, a relay that
publishes it with publisher confirms, and a consumer with an inbox (each event id takes
effect once) and a dead-letter queue. See the modules for the details:

- `envelope`: `EventEnvelope` `{id, type, occurred_at, source, version, data}`
- `types`: the contract's event types and their `data` models
- `outbox`: `outbox_table(metadata)`, `add_event(session, type, data, source)`
- `relay`: `OutboxRelay`, the background publisher; `relay_thread`: `RelayThread`, the
  same on an event loop of its own (what a service runs)
- `consumer`: `EventHandlers`, `EventConsumer`, `inbox_table(metadata)`
- `broker`: `Broker` (the process's connection) and `Topology` (exchange and queue names)
- `runtime`: `add_events(service, publishes=..., handlers=...)`, a service's step
- `dlq`: `python -m eventbus.dlq list|replay --service NAME`
"""

from eventbus.broker import MAX_DELIVERIES, Broker, BrokerUnavailable, Topology
from eventbus.consumer import EventConsumer, EventHandlers, Handler, inbox_table
from eventbus.envelope import EventEnvelope
from eventbus.outbox import add_event, outbox_table
from eventbus.relay import OutboxRelay
from eventbus.relay_thread import RelayThread
from eventbus.runtime import ServiceEvents, add_events

__all__ = [
    "MAX_DELIVERIES",
    "Broker",
    "BrokerUnavailable",
    "EventConsumer",
    "EventEnvelope",
    "EventHandlers",
    "Handler",
    "OutboxRelay",
    "RelayThread",
    "ServiceEvents",
    "Topology",
    "add_event",
    "add_events",
    "inbox_table",
    "outbox_table",
]
