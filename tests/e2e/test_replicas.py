"""The system scaled out: two processes of every service and of the gateway, each pair
behind an nginx upstream, on PostgreSQL, Redis and RabbitMQ. Traffic reaches every
process; the relays share each outbox (every event published once), the consumers share
each queue, the rate limit is one budget across the gateways, and a replica killed with
SIGKILL in the middle of checkouts loses nothing: its events go out from the other, and
its half-done orders are expired by the other's sweep, once.

The race and the Idempotency-Key tests of test_checkout.py run on this stack too."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections import Counter
from typing import TYPE_CHECKING, Any

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devstack import SERVICES
from eventbus.outbox import OUTBOX
from service_testing import assert_problem

if TYPE_CHECKING:
    from conftest import Shop
    from devstack.replicas import ReplicatedStack
    from service_testing import RabbitMQNode

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.rabbitmq]

PUBLISHED_ROWS = f"SELECT count(*) FROM {OUTBOX.name} WHERE published_at IS NOT NULL"  # noqa: S608
PENDING_ROWS = f"SELECT count(*) FROM {OUTBOX.name} WHERE published_at IS NULL"  # noqa: S608

#: The statuses an order ends a checkout in.
SETTLED = {"confirmed", "cancelled"}


def metric_total(text: str, name: str, **labels: str) -> float:
    """The sum of a counter's samples whose labels include `labels`."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and labels.items() <= sample.labels.items():
                total += sample.value
    return total


async def replica_metrics(stack: ReplicatedStack, name: str) -> list[str]:
    async with httpx.AsyncClient(timeout=10) as client:
        answers = [
            await client.get(f"{stack.replica_url(name, index)}/metrics")
            for index in range(len(stack.replica_ports[name]))
        ]
    return [answer.text for answer in answers]


def api_requests(text: str) -> float:
    """Requests served other than health checks and scrapes (the balancer's and ours)."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            route = sample.labels.get("route", "")
            if sample.name == "http_requests_total" and not route.startswith(
                ("/health", "/metrics")
            ):
                total += sample.value
    return total


async def database_rows(stack: ReplicatedStack, service: str, query: str) -> int:
    """One count from a service's own database (what the API does not show: its outbox)."""
    url = stack.env[f"{service.upper()}_DATABASE_URL"]
    dsn = url.replace("postgresql+asyncpg://", "postgresql://").split("?")[0]
    connection = await asyncpg.connect(dsn)
    try:
        return int(await connection.fetchval(query))
    finally:
        await connection.close()


async def buyer(shop: Shop) -> dict[str, str]:
    email = f"replica-{uuid.uuid4().hex[:10]}@example.com"
    await shop.register(email)
    return await shop.headers(email)


async def order(
    client: httpx.AsyncClient, headers: dict[str, str], product_id: str
) -> httpx.Response:
    return await client.post(
        "/api/v1/orders",
        json={"items": [{"product_id": product_id, "quantity": 1}], "payment_token": "tok_ok"},
        headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
    )


async def orders_of(
    client: httpx.AsyncClient, admin: dict[str, str], product_id: str
) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    offset = 0
    while True:
        response = await client.get(
            "/api/v1/orders", params={"limit": 100, "offset": offset}, headers=admin
        )
        if response.status_code == 503:  # the gateway's breaker, after a replica died
            await asyncio.sleep(float(response.headers.get("retry-after", "1")))
            continue
        assert response.status_code == 200, response.text
        page = response.json()
        found += [item for item in page["items"] if item["items"][0]["product_id"] == product_id]
        offset += len(page["items"])
        if not page["items"] or offset >= page["total"]:
            return found


async def notifications(client: httpx.AsyncClient, headers: dict[str, str]) -> list[Any]:
    response = await client.get("/api/v1/notifications", params={"limit": 100}, headers=headers)
    assert response.status_code == 200, response.text
    items: list[Any] = response.json()["items"]
    return items


async def until(check: Any, within: float, message: str) -> Any:
    """Poll the coroutine function `check` until it returns something truthy."""
    deadline = time.monotonic() + within
    while not (result := await check()):
        assert time.monotonic() < deadline, message
        await asyncio.sleep(0.3)
    return result


class TestEveryReplicaWorks:
    async def test_traffic_and_events_spread_and_each_event_is_published_once(
        self, replica_stack: ReplicatedStack, replica_gateway: httpx.AsyncClient, replica_shop: Shop
    ) -> None:
        product = await replica_shop.stocked_product(50, "REPLICAS")
        customer = await buyer(replica_shop)

        answers = [await order(replica_gateway, customer, product) for _ in range(12)]

        assert [answer.status_code for answer in answers] == [201] * 12
        confirmed = {answer.json()["id"] for answer in answers}

        async def all_notified() -> bool:
            kinds = {
                (n["kind"], n["order_id"]) for n in await notifications(replica_gateway, customer)
            }
            return {("order_confirmed", order_id) for order_id in confirmed} <= kinds

        await until(all_notified, 30, "confirmed orders were not notified")
        for _ in range(4):  # a customer rereads them, as a shop page would
            assert len(await notifications(replica_gateway, customer)) == 13
        stock = (await replica_gateway.get(f"/api/v1/inventory/{product}")).json()
        assert (stock["available"], stock["reserved"]) == (38, 0)

        # Every process served requests: the balancers spread them.
        for spec in SERVICES:
            served = [
                api_requests(text) for text in await replica_metrics(replica_stack, spec.name)
            ]
            assert all(count > 0 for count in served), (spec.name, served)
        # Both consumers of each queue took events from it.
        for name in ("inventory_service", "notification_service"):
            consumed = [
                metric_total(text, "events_consumed_total", outcome="processed")
                for text in await replica_metrics(replica_stack, name)
            ]
            assert all(count > 0 for count in consumed), (name, consumed)
        # The two relays of each outbox published every row once between them: the
        # broker confirmed as many events as the outbox holds published rows.
        for name in ("user_service", "order_service"):
            published = sum(
                metric_total(text, "events_published_total")
                for text in await replica_metrics(replica_stack, name)
            )
            rows = await database_rows(replica_stack, name, PUBLISHED_ROWS)
            assert published == rows, (name, published, rows)


class TestSharedRateLimit:
    async def test_one_budget_across_the_gateways(
        self, replica_stack: ReplicatedStack, replica_gateway: httpx.AsyncClient
    ) -> None:
        limit = int(replica_stack.env["RATE_LIMIT_PER_MINUTE"])
        before = [
            api_requests(text) for text in await replica_metrics(replica_stack, "api_gateway")
        ]
        unknown = f"/api/v1/products/{uuid.uuid4()}"

        async def burst(count: int) -> list[int]:
            return [(await replica_gateway.get(unknown)).status_code for _ in range(count)]

        statuses = Counter(
            status
            for batch in await asyncio.gather(*(burst(40) for _ in range(8)))
            for status in batch
        )

        # Counted once across both gateways (counters of their own would let about
        # twice the limit through). The sliding window weighs the previous minute's
        # hits, so a burst across a minute's turn may be cut a request or two early.
        assert set(statuses) == {404, 429}, statuses
        assert limit - 3 <= statuses[404] <= limit, statuses
        after = [api_requests(text) for text in await replica_metrics(replica_stack, "api_gateway")]
        assert all(now - then >= 100 for now, then in zip(after, before, strict=True)), (
            before,
            after,
        )
        refused = await replica_gateway.get(unknown)
        assert_problem(refused, 429)
        assert 1 <= int(refused.headers["retry-after"]) <= 60


class TestReplicaKilledMidCheckout:
    async def test_nothing_is_lost_and_nothing_is_done_twice(
        self,
        replica_stack: ReplicatedStack,
        replica_gateway: httpx.AsyncClient,
        replica_shop: Shop,
        rabbitmq_node: RabbitMQNode,
    ) -> None:
        """Checkouts wait on a frozen inventory while the broker is down (so every event
        they write stays in the outbox); one order_service process is killed with
        SIGKILL. Its checkouts never answer; the other process publishes its outbox
        rows and its sweep expires its pending orders once each, giving their stock back."""
        admin = await replica_shop.admin_headers()
        product = await replica_shop.stocked_product(30, "REPLICAS")
        customers = [await buyer(replica_shop) for _ in range(4)]
        inventory = [replica_stack.processes["inventory_service", i] for i in range(2)]

        await asyncio.to_thread(rabbitmq_node.stop_app)
        for process in inventory:
            process.send_signal(signal.SIGSTOP)
        try:
            checkouts = [
                asyncio.create_task(order(replica_gateway, customers[n % 4], product))
                for n in range(16)
            ]

            async def all_pending() -> bool:
                found = await orders_of(replica_gateway, admin, product)
                return len(found) == 16 and {o["status"] for o in found} == {"pending"}

            await until(all_pending, 20, "the checkouts did not reach inventory")
            await asyncio.to_thread(replica_stack.kill, "order_service", 0)
        finally:
            for process in inventory:
                process.send_signal(signal.SIGCONT)
        answers = await asyncio.gather(*checkouts)
        await asyncio.to_thread(rabbitmq_node.start_app)
        restart = asyncio.create_task(asyncio.to_thread(replica_stack.start, "order_service", 0))

        lost = [answer for answer in answers if answer.status_code != 201]
        assert lost, "the killed process was serving none of the checkouts"
        for answer in lost:
            assert answer.status_code in (503, 504), answer.text
            assert_problem(answer, answer.status_code)

        async def all_settled() -> list[dict[str, Any]] | None:
            found = await orders_of(replica_gateway, admin, product)
            return found if {o["status"] for o in found} <= SETTLED else None

        settled = await until(all_settled, 60, "orders stayed pending")
        outcomes = Counter((o["status"], o["cancel_reason"]) for o in settled)
        assert outcomes[("cancelled", "expired")] >= len(lost), outcomes
        assert set(outcomes) <= {("confirmed", None), ("cancelled", "expired")}, outcomes
        sold = outcomes[("confirmed", None)]

        async def stock_settled() -> dict[str, int] | None:
            level: dict[str, int] = (
                await replica_gateway.get(f"/api/v1/inventory/{product}")
            ).json()
            return level if level["reserved"] == 0 else None

        level = await until(stock_settled, 60, "stock stayed reserved")
        assert level["available"] + sold == 30, (level, outcomes)

        async def outbox_drained() -> bool:
            return await database_rows(replica_stack, "order_service", PENDING_ROWS) == 0

        await until(outbox_drained, 60, "order events stayed in the outbox")

        # Each order was settled once (one sweep acted, not both) and told once.
        by_order = {o["id"]: o for o in settled}
        expected = {
            ("order_confirmed" if o["status"] == "confirmed" else "order_cancelled", o["id"])
            for o in settled
        }

        async def everyone_told() -> list[Any] | None:
            told = [
                item
                for headers in customers
                for item in await notifications(replica_gateway, headers)
                if item["order_id"] in by_order
            ]
            return told if {(t["kind"], t["order_id"]) for t in told} >= expected else None

        told = await until(everyone_told, 60, "settled orders were not all notified")
        assert len(told) == len(settled), Counter((t["kind"], t["order_id"]) for t in told)
        for order_id, found in by_order.items():
            if found["status"] == "cancelled":
                timeline = (
                    await replica_gateway.get(f"/api/v1/orders/{order_id}/timeline", headers=admin)
                ).json()
                assert [entry["event"] for entry in timeline] == ["created", "cancelled"], timeline
        await restart
