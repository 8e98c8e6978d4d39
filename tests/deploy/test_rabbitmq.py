"""The broker's users (kubernetes/overlays/dev/rabbitmq/definitions.sh, which compose
mounts too): one per service, publishing only its own resource's event types and
reading only its own queues, checked against the event types and handlers in the code.
(RabbitMQ matches these patterns with `re:run`, a search, as `re.search` does here;
tests/deploy/test_compose_stack.py has the real broker refuse what they refuse.)"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
from datetime import timedelta
from typing import Any

import pytest
import yaml

from eventbus import Topology
from eventbus.types import EVENT_TYPES
from inventory_service.events import handlers as inventory_handlers
from notification_service.config import Settings as NotificationSettings
from notification_service.events import event_handlers
from notification_service.mailer import Mailer
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


@pytest.fixture(scope="module")
def definitions() -> dict[str, Any]:
    rendered = render(
        RABBITMQ_DEFAULT_USER="admin", RABBITMQ_DEFAULT_PASS="admin-test", **PASSWORDS
    )
    assert rendered.returncode == 0, rendered.stderr
    loaded: dict[str, Any] = json.loads(rendered.stdout)
    return loaded


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
