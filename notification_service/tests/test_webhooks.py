"""Webhooks: endpoints managed by administrators, deliveries owed with the event's inbox
row, signed per Standard Webhooks, retried, replayed, and shared by several workers."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
import socket
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any, ClassVar
from urllib.parse import urlsplit

import pytest
from cryptography.fernet import Fernet
from fastapi import FastAPI
from httpx import AsyncClient
from pydantic import ValidationError
from sqlalchemy import event, select, text
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from eventbus import EventEnvelope
from eventbus.types import EVENT_TYPES, OrderChanged, OrderItem, ProductChanged, UserRegistered
from notification_service.config import Settings
from notification_service.deps import get_webhook_service
from notification_service.models import WebhookAttempt
from notification_service.schemas import WebhookEventType
from notification_service.webhooks import sender as sender_module
from notification_service.webhooks.repository import DeliveryRepository, EndpointRepository
from notification_service.webhooks.schedule import (
    Verdict,
    judge,
    next_attempt_at,
    parse_retry_after,
    retry_delay,
)
from notification_service.webhooks.sender import WebhookSender
from notification_service.webhooks.service import WebhookService
from notification_service.webhooks.signing_secrets import SecretBox, SecretUnreadable
from notification_service.webhooks.url_guard import ResolvedUrl
from notification_service.webhooks.worker import DeliveryWorker
from service_testing import (
    LocalTokens,
    WebhookReceiver,
    assert_problem,
    eventually,
    production_credentials,
    unanswering_endpoint,
)
from shared.service import SessionDep


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as running:
        yield running


@pytest.fixture
def admin(tokens: LocalTokens) -> dict[str, str]:
    return tokens.headers(role="admin")


@pytest.fixture
def path() -> str:
    """A path of the receiver for this test alone."""
    return f"/hook/{uuid.uuid4().hex}"


async def register(
    client: AsyncClient, admin: dict[str, str], url: str, events: list[str] | None = None
) -> dict[str, Any]:
    response = await client.post(
        "/v1/webhooks",
        json={"url": url, "events": events or ["order.confirmed"], "description": "ERP"},
        headers=admin,
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def deliveries(
    client: AsyncClient, admin: dict[str, str], webhook_id: str
) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/webhooks/{webhook_id}/deliveries", headers=admin)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def settled(
    client: AsyncClient, admin: dict[str, str], webhook_id: str, status: str
) -> dict[str, Any]:
    """Wait for the endpoint's only delivery to reach `status`, and return it."""
    found: list[dict[str, Any]] = []

    async def reached() -> bool:
        found[:] = await deliveries(client, admin, webhook_id)
        return len(found) == 1 and found[0]["status"] == status

    await eventually(reached, message=f"the delivery never became {status}: {found}")
    return found[0]


async def process(app: FastAPI, event: EventEnvelope) -> bool:
    """Hand the event to the app's consumer as a delivery from the broker would."""
    processed: bool = await app.state.events.consumer.process(event)
    return processed


async def order_confirmed(app: FastAPI) -> EventEnvelope:
    """A customer's `user.registered` and then their `order.confirmed`, processed."""
    user_id = uuid.uuid4()
    user = UserRegistered(user_id=user_id, email="ada@example.com", full_name="Ada Lovelace")
    await process(app, EventEnvelope.new("user.registered", user, source="user_service"))
    order = OrderChanged(
        order_id=uuid.uuid4(),
        user_id=user_id,
        status="confirmed",
        items=[OrderItem(product_id=uuid.uuid4(), quantity=2)],
        total_amount=Decimal("25.98"),
    )
    event = EventEnvelope.new("order.confirmed", order, source="order_service")
    assert await process(app, event)
    return event


def verify(secret: str, hook: Any) -> dict[str, Any]:
    """What a receiver does, with the standardwebhooks library."""
    payload: dict[str, Any] = Webhook(secret).verify(hook.body, hook.headers)
    return payload


class TestManagement:
    async def test_the_secret_is_shown_once(
        self, client: AsyncClient, admin: dict[str, str], receiver: WebhookReceiver
    ) -> None:
        created = await register(
            client, admin, receiver.url(), ["order.shipped", "user.registered"]
        )

        assert created["secret"].startswith("whsec_")
        assert created["events"] == ["order.shipped", "user.registered"]
        assert created["is_active"] is True
        one = await client.get(f"/v1/webhooks/{created['id']}", headers=admin)
        page = await client.get("/v1/webhooks", headers=admin)
        patched = await client.patch(
            f"/v1/webhooks/{created['id']}", json={"is_active": False}, headers=admin
        )
        for response in (one, page, patched):
            assert response.status_code == 200, response.text
            assert created["secret"] not in response.text
            assert "secret" not in response.text
        assert page.json()["total"] == 1
        assert patched.json()["is_active"] is False

    async def test_the_secret_is_stored_encrypted(
        self, app: FastAPI, client: AsyncClient, admin: dict[str, str], receiver: WebhookReceiver
    ) -> None:
        created = await register(client, admin, receiver.url())

        async with app.state.database.engine.connect() as connection:
            stored = (
                await connection.execute(text("SELECT secret_encrypted FROM webhook_endpoint"))
            ).scalar_one()
        secret = created["secret"].encode()
        assert secret not in bytes(stored)
        assert secret.removeprefix(b"whsec_") not in bytes(stored)

    async def test_administrators_only(
        self, client: AsyncClient, tokens: LocalTokens, receiver: WebhookReceiver
    ) -> None:
        body = {"url": receiver.url(), "events": ["order.shipped"]}
        assert_problem(await client.post("/v1/webhooks", json=body), 401)
        customer = tokens.headers()
        assert_problem(await client.post("/v1/webhooks", json=body, headers=customer), 403)
        assert_problem(await client.get("/v1/webhooks", headers=customer), 403)
        assert_problem(await client.get(f"/v1/webhooks/{uuid.uuid4()}", headers=customer), 403)

    @pytest.mark.parametrize(
        "body",
        [
            {"url": "ftp://example.com/hook", "events": ["order.shipped"]},
            {"url": "not a url", "events": ["order.shipped"]},
            {"url": "https://example.com/hook", "events": ["order.teleported"]},
            {"url": "https://example.com/hook", "events": []},
            {"url": "https://example.com/hook", "events": ["order.shipped"], "secret": "x"},
            {"url": "https://example.com/" + "a" * 2100, "events": ["order.shipped"]},
        ],
    )
    async def test_bad_bodies_are_422(
        self, client: AsyncClient, admin: dict[str, str], body: dict[str, Any]
    ) -> None:
        assert_problem(await client.post("/v1/webhooks", json=body, headers=admin), 422)

    async def test_patch_refuses_nulls_and_unknown_ids(
        self, client: AsyncClient, admin: dict[str, str], receiver: WebhookReceiver
    ) -> None:
        created = await register(client, admin, receiver.url())
        response = await client.patch(
            f"/v1/webhooks/{created['id']}", json={"url": None}, headers=admin
        )
        assert_problem(response, 422)
        response = await client.patch(
            f"/v1/webhooks/{uuid.uuid4()}", json={"is_active": True}, headers=admin
        )
        assert_problem(response, 404)

    async def test_delete(
        self, client: AsyncClient, admin: dict[str, str], receiver: WebhookReceiver
    ) -> None:
        created = await register(client, admin, receiver.url())
        response = await client.delete(f"/v1/webhooks/{created['id']}", headers=admin)
        assert response.status_code == 204
        assert_problem(await client.get(f"/v1/webhooks/{created['id']}", headers=admin), 404)

    def test_every_contract_event_type_can_be_subscribed(self) -> None:
        assert set(WebhookEventType.__args__) == set(EVENT_TYPES)  # type: ignore[attr-defined]


class TestPrivateAddresses:
    """With the guard on (production's default), hosts inside the network are refused."""

    @pytest.fixture
    async def guarded(self, app: FastAPI) -> AsyncIterator[None]:
        async def guarded_service(session: SessionDep) -> WebhookService:
            return WebhookService(
                session,
                secret_box=app.state.webhook_secret_box,
                block_private_hosts=True,
                retry_window=timedelta(hours=1),
            )

        app.dependency_overrides[get_webhook_service] = guarded_service
        yield
        app.dependency_overrides.pop(get_webhook_service)

    @pytest.mark.parametrize(
        "url",
        [
            "http://127.0.0.1:8005/hook",
            "http://localhost/hook",
            "http://10.1.2.3/hook",
            "http://192.168.0.10/hook",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]/hook",
            "http://[::ffff:127.0.0.1]/hook",
            "http://100.100.100.200/hook",
            "http://does-not-resolve.invalid/hook",
        ],
    )
    async def test_refused(
        self, client: AsyncClient, admin: dict[str, str], guarded: None, url: str
    ) -> None:
        body = {"url": url, "events": ["order.shipped"]}
        problem = assert_problem(await client.post("/v1/webhooks", json=body, headers=admin), 422)
        assert problem["errors"][0]["loc"] == ["body", "url"]

    async def test_a_public_address_is_accepted(
        self, client: AsyncClient, admin: dict[str, str], guarded: None
    ) -> None:
        body = {"url": "https://93.184.215.14/hook", "events": ["order.shipped"]}
        response = await client.post("/v1/webhooks", json=body, headers=admin)
        assert response.status_code == 201, response.text

    async def test_checked_again_when_sending(self) -> None:
        """A host that turned private after registration (DNS rebinding) gets nothing."""
        sender = WebhookSender(timeout_seconds=1, block_private_hosts=True, max_connections=1)
        try:
            attempt = await sender.send("http://localhost:9/hook", "whsec_" + "A" * 44, "id", "{}")
        finally:
            await sender.aclose()
        assert attempt.response_status is None
        assert attempt.error is not None
        assert attempt.error.startswith("refused")


class TestHostLookup:
    """An endpoint's host is looked up by c-ares, never by the loop's resolver: its pool
    of threads is the service's own (user_service, the broker), and an endpoint whose
    DNS answers slowly held it for seconds, failing every token check meanwhile."""

    async def test_sent_without_the_loops_resolver_trying_each_address(
        self, receiver: WebhookReceiver, path: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        async def never_answers(*args: Any, **kwargs: Any) -> Any:
            await asyncio.Event().wait()

        monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", never_answers)
        # localhost is ::1 first, where the receiver (on 127.0.0.1) does not listen.
        url = receiver.url(path).replace("127.0.0.1", "localhost")
        sender = WebhookSender(timeout_seconds=5, block_private_hosts=False, max_connections=2)
        try:
            attempt = await sender.send(url, "whsec_" + "A" * 44, "id", "{}")
        finally:
            await sender.aclose()
        assert (attempt.response_status, attempt.error) == (200, None)
        [hook] = receiver.at(path)
        assert hook.headers["host"] == urlsplit(url).netloc

    async def test_an_address_that_never_answers_costs_only_its_share_of_the_attempt(
        self, receiver: WebhookReceiver, path: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        port = urlsplit(receiver.url(path)).port
        assert port is not None
        # 127.0.0.2 on the receiver's port drops connections, as a firewall would: a
        # listener whose queue is full lets the kernel ignore new connections' SYNs.
        with socket.socket() as blackhole, contextlib.ExitStack() as queued:
            blackhole.bind(("127.0.0.2", port))
            blackhole.listen(0)
            for _ in range(3):
                waiting = queued.enter_context(socket.socket())
                waiting.setblocking(False)
                with contextlib.suppress(BlockingIOError):
                    waiting.connect(("127.0.0.2", port))

            async def first_unanswered(url: str, resolver: object) -> ResolvedUrl:
                addresses = (ipaddress.ip_address("127.0.0.2"), ipaddress.ip_address("127.0.0.1"))
                return ResolvedUrl("hooks.test", port, addresses)

            monkeypatch.setattr(sender_module, "resolve", first_unanswered)
            sender = WebhookSender(timeout_seconds=3, block_private_hosts=False, max_connections=2)
            try:
                attempt = await sender.send(
                    f"http://hooks.test:{port}{path}", "whsec_" + "A" * 44, "id", "{}"
                )
            finally:
                await sender.aclose()
        assert (attempt.response_status, attempt.error) == (200, None)
        assert 1400 <= attempt.duration_ms < 3000  # a half for 127.0.0.2, then 127.0.0.1
        [hook] = receiver.at(path)
        assert hook.headers["host"] == f"hooks.test:{port}"

    async def test_a_host_that_does_not_resolve_is_a_failed_attempt(self) -> None:
        sender = WebhookSender(timeout_seconds=5, block_private_hosts=False, max_connections=1)
        try:
            attempt = await sender.send(
                "http://does-not-resolve.invalid/hook", "whsec_" + "A" * 44, "id", "{}"
            )
        finally:
            await sender.aclose()
        assert attempt.response_status is None
        assert attempt.error == "the host does-not-resolve.invalid does not resolve"


class TestDelivery:
    async def test_signed_with_the_event_as_body(
        self,
        app: FastAPI,
        client: AsyncClient,
        admin: dict[str, str],
        receiver: WebhookReceiver,
        path: str,
    ) -> None:
        created = await register(client, admin, receiver.url(path), ["order.confirmed"])

        event = await order_confirmed(app)

        delivery = await settled(client, admin, created["id"], "succeeded")
        [hook] = receiver.at(path)
        payload = verify(created["secret"], hook)
        assert payload == event.model_dump(mode="json")
        assert hook.headers["webhook-id"] == str(event.id)
        assert hook.headers["content-type"] == "application/json"
        assert delivery["event_id"] == str(event.id)
        assert delivery["event_type"] == "order.confirmed"
        assert (delivery["attempts"], delivery["response_status"]) == (1, 200)
        assert delivery["next_attempt_at"] is None
        with pytest.raises(WebhookVerificationError):
            Webhook("whsec_" + "B" * 44).verify(hook.body, hook.headers)

    async def test_only_subscribed_active_endpoints_get_an_event(
        self,
        app: FastAPI,
        client: AsyncClient,
        admin: dict[str, str],
        receiver: WebhookReceiver,
        path: str,
    ) -> None:
        shipped = await register(client, admin, receiver.url(path + "/a"), ["order.shipped"])
        products = await register(client, admin, receiver.url(path + "/b"), ["product.created"])
        inactive = await register(client, admin, receiver.url(path + "/c"), ["product.created"])
        await client.patch(
            f"/v1/webhooks/{inactive['id']}", json={"is_active": False}, headers=admin
        )

        data = ProductChanged(
            product_id=uuid.uuid4(), sku="LAMP-1", name="Lamp", price="9.90", is_active=True
        )
        await process(app, EventEnvelope.new("product.created", data, source="product_service"))

        await settled(client, admin, products["id"], "succeeded")
        assert await deliveries(client, admin, shipped["id"]) == []
        assert await deliveries(client, admin, inactive["id"]) == []
        assert receiver.at(path + "/c") == []

    async def test_a_batch_of_events_reads_the_endpoints_once(
        self, app: FastAPI, client: AsyncClient, admin: dict[str, str], receiver: WebhookReceiver
    ) -> None:
        shipped = await register(client, admin, receiver.url("/a"), ["order.shipped"])
        both = await register(client, admin, receiver.url("/b"), ["order.shipped", "order.created"])
        async with app.state.database.sessionmaker() as session:  # a consumer's batch
            # Only this session's connection is watched: the service's background
            # workers query the same database meanwhile.
            connection = (await session.connection()).sync_connection
            selects: list[str] = []

            def record(_connection: Any, _cursor: Any, statement: str, *_: Any) -> None:
                if statement.lstrip().upper().startswith("SELECT"):
                    selects.append(statement)

            event.listen(connection, "before_cursor_execute", record)
            endpoints = EndpointRepository(session)
            owed = [await endpoints.subscribed_to(type_) for type_ in EVENT_TYPES]
            event.remove(connection, "before_cursor_execute", record)
            assert len(selects) == 1

        by_type = dict(zip(EVENT_TYPES, owed, strict=True))
        assert sorted(map(str, by_type["order.shipped"])) == sorted([shipped["id"], both["id"]])
        assert list(map(str, by_type["order.created"])) == [both["id"]]
        assert by_type["order.confirmed"] == []

    async def test_a_replayed_event_is_owed_once(
        self,
        app: FastAPI,
        client: AsyncClient,
        admin: dict[str, str],
        receiver: WebhookReceiver,
        path: str,
    ) -> None:
        created = await register(client, admin, receiver.url(path))
        event = await order_confirmed(app)

        assert not await process(app, event)

        await settled(client, admin, created["id"], "succeeded")
        await asyncio.sleep(0.3)
        assert len(receiver.at(path)) == 1

    async def test_5xx_is_retried_with_the_same_id(
        self,
        app: FastAPI,
        client: AsyncClient,
        admin: dict[str, str],
        receiver: WebhookReceiver,
        path: str,
    ) -> None:
        receiver.answer(path, 500, 503)
        created = await register(client, admin, receiver.url(path))

        event = await order_confirmed(app)

        delivery = await settled(client, admin, created["id"], "succeeded")
        hooks = receiver.at(path)
        assert delivery["attempts"] == 3
        assert {hook.headers["webhook-id"] for hook in hooks} == {str(event.id)}
        for hook in hooks:
            verify(created["secret"], hook)
        # The pauses grow: base 0.05 s, then about 0.1 s (each within a fifth).
        first, second = (b.received_at - a.received_at for a, b in pairwise(hooks))
        assert first >= 0.04
        assert second >= 0.08
        async with app.state.database.sessionmaker() as session:
            attempts = (await session.scalars(select(WebhookAttempt))).all()
        assert sorted(a.response_status for a in attempts) == [200, 500, 503]

    async def test_429_waits_as_long_as_retry_after_says(
        self,
        app: FastAPI,
        client: AsyncClient,
        admin: dict[str, str],
        receiver: WebhookReceiver,
        path: str,
    ) -> None:
        receiver.answer(path, 429, headers={"Retry-After": "1"})
        created = await register(client, admin, receiver.url(path))

        await order_confirmed(app)

        await settled(client, admin, created["id"], "succeeded")
        first, second = receiver.at(path)
        assert second.received_at - first.received_at >= 0.95

    @pytest.mark.parametrize("status", [400, 404, 410, 301])
    async def test_other_answers_fail_at_once(
        self,
        app: FastAPI,
        client: AsyncClient,
        admin: dict[str, str],
        receiver: WebhookReceiver,
        path: str,
        status: int,
    ) -> None:
        receiver.answer(path, status)
        created = await register(client, admin, receiver.url(path))

        await order_confirmed(app)

        delivery = await settled(client, admin, created["id"], "failed")
        assert (delivery["attempts"], delivery["response_status"]) == (1, status)
        assert delivery["error"] == f"HTTP {status}"
        assert delivery["next_attempt_at"] is None
        await asyncio.sleep(0.3)
        assert len(receiver.at(path)) == 1

    async def test_manual_retry_sends_again_at_once(
        self,
        app: FastAPI,
        client: AsyncClient,
        admin: dict[str, str],
        receiver: WebhookReceiver,
        path: str,
    ) -> None:
        receiver.answer(path, 400)
        created = await register(client, admin, receiver.url(path))
        event = await order_confirmed(app)
        failed = await settled(client, admin, created["id"], "failed")

        response = await client.post(
            f"/v1/webhooks/{created['id']}/deliveries/{failed['id']}/retry", headers=admin
        )

        assert response.status_code == 202, response.text
        assert response.json()["status"] == "pending"
        delivery = await settled(client, admin, created["id"], "succeeded")
        assert delivery["attempts"] == 2
        assert [hook.headers["webhook-id"] for hook in receiver.at(path)] == [str(event.id)] * 2

    async def test_retry_of_an_unknown_delivery_is_404(
        self, client: AsyncClient, admin: dict[str, str], receiver: WebhookReceiver
    ) -> None:
        created = await register(client, admin, receiver.url())
        response = await client.post(
            f"/v1/webhooks/{created['id']}/deliveries/{uuid.uuid4()}/retry", headers=admin
        )
        assert_problem(response, 404)

    async def test_a_hung_endpoint_delays_no_other(
        self,
        app: FastAPI,
        client: AsyncClient,
        admin: dict[str, str],
        receiver: WebhookReceiver,
        path: str,
    ) -> None:
        with unanswering_endpoint() as hung_url:
            hung = await register(client, admin, hung_url)
            healthy = await register(client, admin, receiver.url(path))
            for _ in range(10):  # more than the hung endpoint's share of the worker
                await order_confirmed(app)

            await eventually(lambda: len(receiver.at(path)) == 10, within=10)

            # All sent while every attempt at the hung endpoint still waits for its
            # timeout: none of them has been recorded yet.
            hung_deliveries = await deliveries(client, admin, hung["id"])
            assert len(hung_deliveries) == 10
            assert {d["attempts"] for d in hung_deliveries} == {0}
            await eventually(lambda: _any_timed_out(client, admin, hung["id"]), within=10)
            await settled_all(client, admin, healthy["id"], 10)


def another_worker(
    app: FastAPI,
    sender: WebhookSender,
    deliveries_due: asyncio.Event,
    *,
    concurrency: int,
    endpoint_concurrency: int,
) -> DeliveryWorker:
    """A delivery worker on the app's database besides its own, as a replica runs one."""
    return DeliveryWorker(
        app.state.database,
        sender,
        app.state.webhook_secret_box,
        deliveries_due=deliveries_due,
        concurrency=concurrency,
        endpoint_concurrency=endpoint_concurrency,
        poll_seconds=0.01,
        retry_base_seconds=0.05,
        retry_max_seconds=1,
    )


async def settled_all(client: AsyncClient, admin: dict[str, str], webhook_id: str, n: int) -> None:
    async def done() -> bool:
        response = await client.get(
            f"/v1/webhooks/{webhook_id}/deliveries", params={"limit": 100}, headers=admin
        )
        found = response.json()
        return found["total"] == n and {d["status"] for d in found["items"]} == {"succeeded"}

    await eventually(done)


async def _any_timed_out(client: AsyncClient, admin: dict[str, str], webhook_id: str) -> bool:
    return any(d["error"] == "timeout" for d in await deliveries(client, admin, webhook_id))


class TestWorkers:
    async def test_replicas_share_the_work_and_send_each_once(
        self,
        app: FastAPI,
        client: AsyncClient,
        admin: dict[str, str],
        receiver: WebhookReceiver,
        path: str,
    ) -> None:
        """Three more workers on the same database (as replicas would be) race the
        app's own for 40 deliveries: each is sent exactly once."""
        created = await register(client, admin, receiver.url(path))
        senders = [
            WebhookSender(timeout_seconds=5, block_private_hosts=False, max_connections=8)
            for _ in range(3)
        ]
        wakeups = [asyncio.Event() for _ in senders]
        workers = [
            another_worker(app, sender, wakeup, concurrency=8, endpoint_concurrency=4)
            for sender, wakeup in zip(senders, wakeups, strict=True)
        ]
        for worker in workers:
            await worker.start()
        try:
            events = [await order_confirmed(app) for _ in range(40)]
            for wakeup in wakeups:
                wakeup.set()
            await eventually(lambda: len(receiver.at(path)) >= 40, within=20)
            await asyncio.sleep(0.5)
        finally:
            for worker, sender in zip(workers, senders, strict=True):
                await worker.stop()
                await sender.aclose()

        sent = Counter(hook.headers["webhook-id"] for hook in receiver.at(path))
        assert sent == Counter({str(event.id): 1 for event in events})
        await settled_all(client, admin, created["id"], 40)

    async def test_stop_lets_a_claim_in_progress_finish(
        self,
        app: FastAPI,
        client: AsyncClient,
        admin: dict[str, str],
        receiver: WebhookReceiver,
        path: str,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A claim cut off by a cancellation left its connection's transaction open
        until the garbage collector found it: on SQLite the write lock, which failed the
        next writes after five seconds. `stop` lets the pass finish instead."""
        await app.state.webhook_worker.stop()  # the test's worker alone claims
        await register(client, admin, receiver.url(path))
        await order_confirmed(app)
        claiming, finished = asyncio.Event(), asyncio.Event()
        claim = DeliveryRepository.claim

        async def slow_claim(self: DeliveryRepository, **kwargs: Any) -> Any:
            claimed = await claim(self, **kwargs)
            claiming.set()
            await asyncio.sleep(0.3)  # the claim's transaction is still open
            finished.set()
            return claimed

        monkeypatch.setattr(DeliveryRepository, "claim", slow_claim)
        sender = WebhookSender(timeout_seconds=5, block_private_hosts=False, max_connections=2)
        worker = another_worker(app, sender, asyncio.Event(), concurrency=2, endpoint_concurrency=2)
        await worker.start()
        try:
            await asyncio.wait_for(claiming.wait(), timeout=5)
            await worker.stop()
            assert finished.is_set()
        finally:
            await worker.stop()
            await sender.aclose()
        # Nothing holds a write: another one goes through at once.
        async with asyncio.timeout(2), app.state.database.sessionmaker() as session:
            await session.execute(text("UPDATE webhook_delivery SET attempts = attempts"))
            await session.commit()


class TestDeliveriesPage:
    async def test_newest_first_and_unknown_endpoint_404(
        self,
        app: FastAPI,
        client: AsyncClient,
        admin: dict[str, str],
        receiver: WebhookReceiver,
        path: str,
    ) -> None:
        created = await register(client, admin, receiver.url(path))
        events = [await order_confirmed(app) for _ in range(3)]

        page = await client.get(
            f"/v1/webhooks/{created['id']}/deliveries", params={"limit": 2}, headers=admin
        )

        assert page.status_code == 200
        body = page.json()
        assert (body["total"], body["limit"], body["offset"]) == (3, 2, 0)
        assert [d["event_id"] for d in body["items"]] == [str(events[2].id), str(events[1].id)]
        response = await client.get(f"/v1/webhooks/{uuid.uuid4()}/deliveries", headers=admin)
        assert_problem(response, 404)

    async def test_cursor_pages_follow_on_and_keep_to_the_endpoint(
        self,
        app: FastAPI,
        client: AsyncClient,
        admin: dict[str, str],
        receiver: WebhookReceiver,
        path: str,
    ) -> None:
        created = await register(client, admin, receiver.url(path))
        events = [await order_confirmed(app) for _ in range(3)]
        url = f"/v1/webhooks/{created['id']}/deliveries"

        first = (await client.get(url, params={"limit": 2}, headers=admin)).json()
        newer = await order_confirmed(app)  # owed after the first page was read
        response = await client.get(url, params={"cursor": first["next_cursor"]}, headers=admin)

        assert response.status_code == 200, response.text
        second = response.json()
        ids = [d["event_id"] for d in first["items"] + second["items"]]
        assert ids == [str(event.id) for event in events[::-1]]
        assert (second["offset"], second["total"], "next_cursor" in second) == (2, 4, False)
        latest = (await client.get(url, params={"limit": 1}, headers=admin)).json()
        assert [d["event_id"] for d in latest["items"]] == [str(newer.id)]
        other = await register(client, admin, receiver.url(f"{path}/other"))
        refused = await client.get(
            f"/v1/webhooks/{other['id']}/deliveries",
            params={"cursor": first["next_cursor"]},
            headers=admin,
        )
        assert_problem(refused, 422)  # another endpoint's list


class TestEndpointsPage:
    async def test_newest_first_by_cursor(
        self, client: AsyncClient, admin: dict[str, str], receiver: WebhookReceiver, path: str
    ) -> None:
        created = [await register(client, admin, receiver.url(f"{path}/{i}")) for i in range(3)]

        first = (await client.get("/v1/webhooks", params={"limit": 2}, headers=admin)).json()
        second = (
            await client.get("/v1/webhooks", params={"cursor": first["next_cursor"]}, headers=admin)
        ).json()

        ids = [w["id"] for w in first["items"] + second["items"]]
        assert ids == [w["id"] for w in created[::-1]]
        assert (first["total"], second["offset"], "next_cursor" in second) == (3, 2, False)
        assert all("secret" not in w for w in first["items"] + second["items"])


class TestSchedule:
    @pytest.mark.parametrize(
        ("status", "verdict"),
        [
            (200, Verdict.SUCCEEDED),
            (204, Verdict.SUCCEEDED),
            (None, Verdict.RETRY),
            (429, Verdict.RETRY),
            (500, Verdict.RETRY),
            (503, Verdict.RETRY),
            (301, Verdict.FAILED),
            (400, Verdict.FAILED),
            (404, Verdict.FAILED),
        ],
    )
    def test_what_an_answer_means(self, status: int | None, verdict: Verdict) -> None:
        assert judge(status) is verdict

    def test_pauses_double_up_to_the_maximum_within_a_fifth(self) -> None:
        rng = random.Random(7)
        for attempt, expected in ((1, 5), (2, 10), (3, 20), (8, 640), (11, 3600), (40, 3600)):
            for _ in range(50):
                pause = retry_delay(attempt, base=5, maximum=3600, rng=rng)
                assert expected * 0.8 <= pause <= expected * 1.2

    def test_retry_after_is_honoured_up_to_the_maximum(self) -> None:
        assert retry_delay(1, base=5, maximum=3600, retry_after=120) == 120
        assert retry_delay(1, base=5, maximum=60, retry_after=7200) == 60
        now = datetime(2026, 12, 2, 5, 0, tzinfo=UTC)
        assert parse_retry_after("30") == 30
        assert parse_retry_after("Wed, 02 Dec 2026 05:01:00 GMT", now=now) == 60
        assert parse_retry_after("soon") is None
        assert parse_retry_after(None) is None

    def test_the_retry_window_ends_in_failure(self) -> None:
        now = datetime(2026, 12, 2, 5, 0, tzinfo=UTC)
        window_end = now + timedelta(hours=1)
        assert next_attempt_at(now, window_end, 60) == now + timedelta(seconds=60)
        assert next_attempt_at(window_end, window_end, 60) is None


class TestSettings:
    PRODUCTION: ClassVar[dict[str, Any]] = {
        "environment": "production",
        "database_url": "postgresql+asyncpg://shop:real-password@db/notifications",
        "rabbitmq_url": "amqps://notifications:real-password@mq/",
        **production_credentials("notification_service"),
    }

    def test_production_needs_keys_of_its_own(self) -> None:
        with pytest.raises(ValidationError, match="WEBHOOK_SECRET_KEYS"):
            Settings(_env_file=None, **self.PRODUCTION)  # type: ignore[call-arg]
        with pytest.raises(ValidationError, match="WEBHOOK_SECRET_KEYS"):
            Settings(_env_file=None, webhook_secret_keys="not-a-key", **self.PRODUCTION)  # type: ignore[call-arg]
        key = Fernet.generate_key().decode()
        settings = Settings(_env_file=None, webhook_secret_keys=key, **self.PRODUCTION)  # type: ignore[call-arg]
        assert settings.blocks_private_webhook_hosts

    def test_a_rotated_key_still_reads_old_secrets(self) -> None:
        old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
        stored = SecretBox([old]).encrypt("whsec_abc")
        assert SecretBox([new, old]).decrypt(stored) == "whsec_abc"
        with pytest.raises(SecretUnreadable):
            SecretBox([new]).decrypt(stored)
