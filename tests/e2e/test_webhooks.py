"""Webhooks end to end: an administrator registers a real local receiver through the
gateway, customers order, and the notification service delivers signed events to it,
retries, replays, survives its own restart, and never lets a dead endpoint delay an
e-mail."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from devstack import SERVICES, Stack, start_process, wait_ready
from service_testing import (
    ReceivedWebhook,
    WebhookReceiver,
    assert_problem,
    eventually,
    unanswering_endpoint,
)
from tests.e2e.test_events import place_order, stocked_product, wait_for_notifications

if TYPE_CHECKING:
    from conftest import Shop

pytestmark = [pytest.mark.e2e, pytest.mark.rabbitmq]


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as running:
        yield running


class Webhooks:
    """An administrator's client of /api/v1/webhooks; removes what it registered."""

    def __init__(self, gateway: httpx.AsyncClient, admin: dict[str, str]) -> None:
        self.gateway = gateway
        self.admin = admin
        self.registered: list[str] = []

    async def register(self, url: str, events: list[str]) -> dict[str, Any]:
        response = await self.gateway.post(
            "/api/v1/webhooks", json={"url": url, "events": events}, headers=self.admin
        )
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        self.registered.append(created["id"])
        return created

    async def delivery(self, webhook_id: str, event_id: str) -> dict[str, Any] | None:
        response = await self.gateway.get(
            f"/api/v1/webhooks/{webhook_id}/deliveries",
            params={"limit": 100},
            headers=self.admin,
        )
        assert response.status_code == 200, response.text
        for item in response.json()["items"]:
            if item["event_id"] == event_id:
                found: dict[str, Any] = item
                return found
        return None

    async def settled(
        self, webhook_id: str, event_id: str, status: str, *, attempts: int | None = None
    ) -> dict[str, Any]:
        """The delivery once it has `status` (and, given, that many attempts: a delivery
        is pending from the start, before its first attempt is recorded)."""
        seen: list[dict[str, Any] | None] = [None]

        async def reached() -> bool:
            seen[0] = await self.delivery(webhook_id, event_id)
            return (
                seen[0] is not None
                and seen[0]["status"] == status
                and attempts in (None, seen[0]["attempts"])
            )

        await eventually(reached, within=20, message=f"never {status}: {seen[0]}")
        assert seen[0] is not None
        return seen[0]

    async def remove_all(self) -> None:
        for webhook_id in self.registered:
            await self.gateway.delete(f"/api/v1/webhooks/{webhook_id}", headers=self.admin)


@pytest.fixture
async def webhooks(gateway: httpx.AsyncClient, shop: Shop) -> AsyncIterator[Webhooks]:
    client = Webhooks(gateway, await shop.admin_headers())
    yield client
    await client.remove_all()


@pytest.fixture
def path() -> str:
    return f"/erp/{uuid.uuid4().hex}"


async def customer(gateway: httpx.AsyncClient, shop: Shop) -> dict[str, str]:
    email = f"hooked-{uuid.uuid4().hex[:10]}@example.com"
    await shop.register(email)
    return await shop.headers(email)


def for_order(hooks: list[ReceivedWebhook], order_id: str) -> list[ReceivedWebhook]:
    return [hook for hook in hooks if json.loads(hook.body)["data"].get("order_id") == order_id]


async def test_an_order_reaches_the_receiver_signed(
    gateway: httpx.AsyncClient,
    shop: Shop,
    webhooks: Webhooks,
    receiver: WebhookReceiver,
    path: str,
) -> None:
    created = await webhooks.register(receiver.url(path), ["order.confirmed", "order.shipped"])
    product_id = await stocked_product(gateway, webhooks.admin)
    order = await place_order(gateway, await customer(gateway, shop), product_id)
    shipped = await gateway.post(f"/api/v1/orders/{order['id']}/ship", headers=webhooks.admin)
    assert shipped.status_code == 200, shipped.text

    await eventually(lambda: len(for_order(receiver.at(path), order["id"])) == 2, within=10)

    events = [
        Webhook(created["secret"]).verify(hook.body, hook.headers)
        for hook in for_order(receiver.at(path), order["id"])
    ]
    # Up to WEBHOOK_ENDPOINT_CONCURRENCY deliveries to one endpoint are in flight at once,
    # so the two may arrive in either order (the contract promises none).
    by_type = {event["type"]: event for event in events}
    assert sorted(by_type) == ["order.confirmed", "order.shipped"]
    assert by_type["order.confirmed"]["data"]["status"] == "confirmed"
    for event, hook in zip(events, for_order(receiver.at(path), order["id"]), strict=True):
        assert hook.headers["webhook-id"] == event["id"]
        delivery = await webhooks.settled(created["id"], event["id"], "succeeded")
        assert (delivery["attempts"], delivery["response_status"]) == (1, 200)


async def test_500_then_200_is_retried_with_the_same_id_and_400_fails_at_once(
    gateway: httpx.AsyncClient,
    shop: Shop,
    webhooks: Webhooks,
    receiver: WebhookReceiver,
    path: str,
) -> None:
    flaky = await webhooks.register(receiver.url(path + "/flaky"), ["order.confirmed"])
    refusing = await webhooks.register(receiver.url(path + "/refusing"), ["order.confirmed"])
    receiver.answer(path + "/flaky", 500)
    receiver.answer(path + "/refusing", 400)
    product_id = await stocked_product(gateway, webhooks.admin)

    order = await place_order(gateway, await customer(gateway, shop), product_id)

    await eventually(lambda: len(for_order(receiver.at(path + "/flaky"), order["id"])) == 2)
    first, second = for_order(receiver.at(path + "/flaky"), order["id"])
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    assert first.body == second.body
    Webhook(flaky["secret"]).verify(second.body, second.headers)
    event_id = first.headers["webhook-id"]
    delivery = await webhooks.settled(flaky["id"], event_id, "succeeded")
    assert (delivery["attempts"], delivery["response_status"]) == (2, 200)

    failed = await webhooks.settled(refusing["id"], event_id, "failed")
    assert (failed["attempts"], failed["response_status"]) == (1, 400)
    assert failed["next_attempt_at"] is None

    # Replayed on demand: the same event, signed again.
    response = await gateway.post(
        f"/api/v1/webhooks/{refusing['id']}/deliveries/{failed['id']}/retry",
        headers=webhooks.admin,
    )
    assert response.status_code == 202, response.text
    replayed = await webhooks.settled(refusing["id"], event_id, "succeeded")
    assert replayed["attempts"] == 2
    assert len(for_order(receiver.at(path + "/refusing"), order["id"])) == 2


async def test_deliveries_pending_at_a_restart_go_out_after_it(
    stack: Stack,
    gateway: httpx.AsyncClient,
    shop: Shop,
    webhooks: Webhooks,
    receiver: WebhookReceiver,
    path: str,
) -> None:
    created = await webhooks.register(receiver.url(path), ["order.confirmed"])
    # The first answer asks for a pause long enough to stop the service within it.
    receiver.answer(path, 503, headers={"Retry-After": "4"})
    product_id = await stocked_product(gateway, webhooks.admin)
    order = await place_order(gateway, await customer(gateway, shop), product_id)
    await eventually(lambda: len(for_order(receiver.at(path), order["id"])) == 1)
    event_id = for_order(receiver.at(path), order["id"])[0].headers["webhook-id"]
    # The receiver has the request before the service records its answer.
    pending = await webhooks.settled(created["id"], event_id, "pending", attempts=1)
    assert pending["response_status"] == 503

    spec = next(s for s in SERVICES if s.name == "notification_service")
    process = stack.processes[spec.name]
    process.terminate()
    await asyncio.to_thread(process.wait, 10)
    stack.processes[spec.name] = start_process(
        spec, stack.ports[spec.name], stack.env, log_file=stack.log_file(spec.name)
    )
    await asyncio.to_thread(wait_ready, stack.url(spec.name))

    delivery = await webhooks.settled(created["id"], event_id, "succeeded")
    assert delivery["attempts"] == 2
    first, second = for_order(receiver.at(path), order["id"])
    assert second.received_at - first.received_at >= 3.9  # Retry-After was kept
    Webhook(created["secret"]).verify(second.body, second.headers)


async def test_a_dead_endpoint_does_not_delay_the_customers_email(
    gateway: httpx.AsyncClient, shop: Shop, webhooks: Webhooks
) -> None:
    with unanswering_endpoint() as dead_url:
        dead = await webhooks.register(dead_url, ["user.registered", "order.confirmed"])
        product_id = await stocked_product(gateway, webhooks.admin)
        headers = await customer(gateway, shop)
        await wait_for_notifications(gateway, headers, {("welcome", None)}, within=5)
        started = time.monotonic()

        order = await place_order(gateway, headers, product_id)

        await wait_for_notifications(gateway, headers, {("order_confirmed", order["id"])}, 5)
        # Mailed while the attempts at the dead endpoint still wait for their 10 s.
        assert time.monotonic() - started < 5
        response = await gateway.get(
            f"/api/v1/webhooks/{dead['id']}/deliveries", headers=webhooks.admin
        )
        assert {item["status"] for item in response.json()["items"]} == {"pending"}


async def test_management_is_for_administrators_and_the_secret_is_never_repeated(
    stack: Stack,
    gateway: httpx.AsyncClient,
    shop: Shop,
    webhooks: Webhooks,
    receiver: WebhookReceiver,
) -> None:
    body = {"url": receiver.url(), "events": ["order.shipped"]}
    headers = await customer(gateway, shop)
    assert_problem(await gateway.post("/api/v1/webhooks", json=body, headers=headers), 403)
    assert_problem(await gateway.get("/api/v1/webhooks", headers=headers), 403)
    assert_problem(await gateway.post("/api/v1/webhooks", json=body), 401)
    for bad in (
        {"url": "ftp://erp.example.com/hook", "events": ["order.shipped"]},
        {"url": "javascript:alert(1)", "events": ["order.shipped"]},
        {"url": receiver.url(), "events": ["order.exploded"]},
    ):
        response = await gateway.post("/api/v1/webhooks", json=bad, headers=webhooks.admin)
        assert_problem(response, 422)

    created = await webhooks.register(receiver.url(), ["order.shipped"])
    secret = created["secret"]
    assert secret.startswith("whsec_")
    answers = [
        await gateway.get("/api/v1/webhooks", params={"limit": 100}, headers=webhooks.admin),
        await gateway.get(f"/api/v1/webhooks/{created['id']}", headers=webhooks.admin),
        await gateway.patch(
            f"/api/v1/webhooks/{created['id']}",
            json={"description": "shipping"},
            headers=webhooks.admin,
        ),
        await gateway.get(f"/api/v1/webhooks/{created['id']}/deliveries", headers=webhooks.admin),
    ]
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert secret not in answer.text
        assert secret.removeprefix("whsec_") not in answer.text
    for name in ("notification_service", "api_gateway"):
        log_file = stack.log_file(name)
        assert log_file is not None
        log = log_file.read_text()
        assert created["id"] in log or name == "api_gateway"
        assert secret.removeprefix("whsec_") not in log


async def test_delivery_latency(
    gateway: httpx.AsyncClient,
    shop: Shop,
    webhooks: Webhooks,
    receiver: WebhookReceiver,
    path: str,
) -> None:
    """From the event's commit (its `occurred_at`, written with the order in the same
    transaction) to the receiver having the signed POST."""
    await webhooks.register(receiver.url(path), ["order.confirmed"])
    product_id = await stocked_product(gateway, webhooks.admin)
    headers = await customer(gateway, shop)
    orders = [await place_order(gateway, headers, product_id) for _ in range(20)]

    await eventually(lambda: len(receiver.at(path)) >= len(orders), within=20)

    latencies = sorted(
        hook.received_at - _timestamp(json.loads(hook.body)["occurred_at"])
        for hook in receiver.at(path)
    )
    p50 = statistics.median(latencies)
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(f"webhook delivery latency over {len(latencies)}: p50 {p50:.3f} s, p99 {p99:.3f} s")
    # A coarse guard (the figures are for reading: a busy 2-core machine moves them):
    # none waited for a retry or a stuck worker.
    assert p99 < 5.0


def _timestamp(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso).timestamp()
