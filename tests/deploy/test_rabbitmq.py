"""The broker's definitions (kubernetes/overlays/dev/rabbitmq/definitions.sh, which
compose mounts too).

Users: one per service, publishing only its own resource's event types and reading only
its own queues, checked against the event types and handlers in the code. (RabbitMQ
matches these patterns with `re:run`, a search, as `re.search` does here;
tests/deploy/test_compose_stack.py has the real broker refuse what they refuse.)

Topology: the exchanges, queues and bindings the services declare, declared at the
broker's boot with the same arguments, checked against eventbus and loaded into a real
broker, which must then take an event no consumer has started for yet."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
from datetime import timedelta
from typing import Any

import aio_pika
import pytest
import yaml

from eventbus import Topology
from eventbus.broker import (
    UNROUTABLE_MAX_MESSAGES,
    UNROUTABLE_RETENTION_MS,
    declare_exchange,
    declare_service_queues,
    queue_arguments,
)
from eventbus.types import EVENT_TYPES
from inventory_service.events import handlers as inventory_handlers
from notification_service.config import Settings as NotificationSettings
from notification_service.events import event_handlers
from notification_service.mailer import Mailer
from service_testing import RabbitMQNode
from tests.deploy.manifests import REPO, SPECS

SCRIPT = REPO / "kubernetes" / "overlays" / "dev" / "rabbitmq" / "definitions.sh"
EXCHANGE = "ecommerce.events"
PASSWORDS = {f"{pkg.upper()}_RABBITMQ_PASSWORD": f"{pkg}-test" for pkg in SPECS}
#: The services that talk to the broker (those with a database: an outbox, an inbox).
BROKER_USERS = sorted(pkg for pkg, spec in SPECS.items() if spec.migrations)


def bindings() -> dict[str, tuple[str, ...]]:
    """The event types each consuming service binds its queue to."""
    notifications = event_handlers(
        Mailer(NotificationSettings(_env_file=None)),
        deliveries_due=asyncio.Event(),
        retry_window=timedelta(hours=1),
    )
    return {
        "inventory_service": inventory_handlers.types,
        "notification_service": notifications.types,
    }


def re_search(pattern: str, name: str) -> bool:
    return re.search(pattern, name) is not None


def render(**environment: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(SCRIPT)],
        env={"PATH": os.environ["PATH"], **environment},
        capture_output=True,
        text=True,
        check=False,
    )


def rendered_definitions(**environment: str) -> dict[str, Any]:
    rendered = render(
        RABBITMQ_DEFAULT_USER="admin",
        RABBITMQ_DEFAULT_PASS="admin-test",
        **PASSWORDS,
        **environment,
    )
    assert rendered.returncode == 0, rendered.stderr
    loaded: dict[str, Any] = json.loads(rendered.stdout)
    return loaded


@pytest.fixture(scope="module")
def definitions() -> dict[str, Any]:
    return rendered_definitions()


def by_user(definitions: dict[str, Any], key: str) -> dict[str, dict[str, str]]:
    return {entry["user"]: entry for entry in definitions[key]}


def test_one_user_per_service_and_the_administrator(definitions: dict[str, Any]) -> None:
    users = {user["name"]: user for user in definitions["users"]}
    assert sorted(users) == sorted([*BROKER_USERS, "admin"])
    assert users["admin"]["tags"] == "administrator"
    for name in BROKER_USERS:
        assert users[name]["tags"] == "", "a service is no administrator"
        assert users[name]["password"] == PASSWORDS[f"{name.upper()}_RABBITMQ_PASSWORD"]


@pytest.mark.parametrize("service", BROKER_USERS)
def test_a_service_publishes_only_its_own_resources_events(
    definitions: dict[str, Any], service: str
) -> None:
    topic = by_user(definitions, "topic_permissions")[service]
    permission = by_user(definitions, "permissions")[service]
    assert topic["exchange"] == EXCHANGE
    may_publish = bool(re_search(permission["write"], EXCHANGE))
    publishes = {
        event_type
        for event_type in EVENT_TYPES
        if may_publish and re_search(topic["write"], event_type)
    }
    resource = service.removesuffix("_service")
    owned = {event_type for event_type in EVENT_TYPES if event_type.split(".")[0] == resource}
    assert publishes == owned


@pytest.mark.parametrize("service", BROKER_USERS)
def test_a_service_reads_and_binds_only_its_own_queues(
    definitions: dict[str, Any], service: str
) -> None:
    permission = by_user(definitions, "permissions")[service]
    topic = by_user(definitions, "topic_permissions")[service]
    topology = Topology()
    for other in BROKER_USERS:
        for queue in (topology.queue(other), topology.dead_letter_queue(other)):
            for kind in ("configure", "write", "read"):
                allowed = bool(re_search(permission[kind], queue))
                assert allowed == (other == service and other in bindings()), (kind, queue)
    for event_type in bindings().get(service, ()):
        assert re_search(topic["read"], event_type), f"{service} cannot bind {event_type}"
    if service not in bindings():
        assert not any(re_search(topic["read"], event_type) for event_type in EVENT_TYPES)


def test_every_service_may_declare_the_shared_exchanges(definitions: dict[str, Any]) -> None:
    topology = Topology()
    for service, permission in by_user(definitions, "permissions").items():
        assert re_search(permission["configure"], topology.exchange), service
        assert re_search(permission["read"], topology.exchange), service
        if service in bindings():
            # A queue that dead-letters into the exchange needs write on it.
            assert re_search(permission["write"], topology.dead_letter_exchange), service


@pytest.mark.parametrize(
    "password", ["", "has space", "a/b", 'quote"d', "user:pass@host"], ids=repr
)
def test_a_password_that_would_break_the_url_or_the_file_is_refused(password: str) -> None:
    environment = {**PASSWORDS, "RABBITMQ_DEFAULT_PASS": "admin-test"}
    environment["ORDER_SERVICE_RABBITMQ_PASSWORD"] = password
    rendered = render(**environment)
    assert rendered.returncode != 0
    assert "ORDER_SERVICE_RABBITMQ_PASSWORD" in rendered.stderr
    assert rendered.stdout == ""


def test_the_dev_cluster_runs_the_same_scripts() -> None:
    """One copy of the broker's scripts: compose mounts the folder the dev overlay loads."""
    folder = SCRIPT.parent
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    mounts = [volume.split(":") for volume in compose["services"]["rabbitmq"]["volumes"]]
    assert [(REPO / source).resolve() for source, *_ in mounts if source.startswith(".")] == [
        folder.resolve()
    ]
    overlay = yaml.safe_load((folder.parent / "kustomization.yaml").read_text())
    (generated,) = [m for m in overlay["configMapGenerator"] if m["name"] == "rabbitmq-definitions"]
    assert sorted(generated["files"]) == sorted(
        f"rabbitmq/{path.name}" for path in folder.iterdir() if path.suffix == ".sh"
    )


def test_the_topology_is_what_the_services_declare(definitions: dict[str, Any]) -> None:
    """Every exchange, queue and binding eventbus declares, with its arguments: RabbitMQ
    refuses a service's declaration that differs from what the boot declared."""
    topology = Topology()
    exchanges = {entry["name"]: entry for entry in definitions["exchanges"]}
    assert {name: (e["type"], e["arguments"]) for name, e in exchanges.items()} == {
        topology.exchange: ("topic", {"alternate-exchange": topology.unroutable_exchange}),
        topology.unroutable_exchange: ("fanout", {}),
        topology.dead_letter_exchange: ("direct", {}),
    }
    expected_queues = {
        topology.unroutable_queue: {
            "x-max-length": UNROUTABLE_MAX_MESSAGES,
            "x-overflow": "drop-head",
            "x-message-ttl": UNROUTABLE_RETENTION_MS,
        }
    }
    expected_bindings = {
        (topology.unroutable_exchange, topology.unroutable_queue, topology.unroutable_queue)
    }
    for service, types in bindings().items():
        queue, dead_letters = topology.queue(service), topology.dead_letter_queue(service)
        expected_queues[queue] = queue_arguments(topology, service)
        expected_queues[dead_letters] = {"x-queue-type": "quorum"}
        expected_bindings.add((topology.dead_letter_exchange, dead_letters, queue))
        expected_bindings |= {(topology.exchange, queue, type_) for type_ in types}
    assert {q["name"]: q["arguments"] for q in definitions["queues"]} == expected_queues
    assert {
        (b["source"], b["destination"], b["routing_key"]) for b in definitions["bindings"]
    } == expected_bindings
    everything = [*definitions["exchanges"], *definitions["queues"]]
    assert all(entry["durable"] and not entry["auto_delete"] for entry in everything)


@pytest.mark.rabbitmq
async def test_an_event_published_before_its_consumer_first_starts_is_kept_for_it(
    rabbitmq_node: RabbitMQNode, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The definitions loaded into a real broker: an event published at once (the
    admin's welcome at a first start) waits in the consumer's queue, and every service
    then declares the same topology without a refusal."""
    vhost = f"definitions-{os.getpid()}"
    path = tmp_path / "definitions.json"
    path.write_text(json.dumps(rendered_definitions(RABBITMQ_VHOST=vhost)))
    await asyncio.to_thread(rabbitmq_node.ctl, "import_definitions", str(path))
    try:
        await asyncio.to_thread(
            rabbitmq_node.ctl, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"
        )
        connection = await aio_pika.connect(rabbitmq_node.url + vhost)
        async with connection:
            channel = await connection.channel()
            topology = Topology()
            exchange = await channel.get_exchange(topology.exchange, ensure=False)
            await exchange.publish(
                aio_pika.Message(b"{}", delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key="user.registered",
                mandatory=True,
            )
            queue = await channel.declare_queue(
                topology.queue("notification_service"), passive=True
            )
            assert queue.declaration_result.message_count == 1
            for service, types in bindings().items():
                await declare_service_queues(connection, channel, topology, service, types)
            await declare_exchange(connection, channel, topology)
        assert "predates its alternate exchange" not in caplog.text
    finally:
        await asyncio.to_thread(rabbitmq_node.ctl, "delete_vhost", vhost)
