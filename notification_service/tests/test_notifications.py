"""Notifications from events, and GET /v1/notifications."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import aio_pika
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import func, select

from eventbus import EventConsumer, EventEnvelope, EventHandlers, Topology
from eventbus.broker import declare_exchange
from eventbus.types import (
    EVENT_TYPES,
    OrderChanged,
    OrderItem,
    OrderRefunded,
    ShippingAddress,
    UserRegistered,
)
from notification_service.config import Settings
from notification_service.events import RecipientUnknown, event_handlers
from notification_service.mailer import Mailer
from notification_service.models import Notification, Recipient
from service_testing import RABBITMQ_URL, LocalTokens, assert_problem, eventually, free_port


def user_registered(
    user_id: uuid.UUID, email: str = "ada@example.com", full_name: str = "Ada Lovelace"
) -> EventEnvelope:
    data = UserRegistered(user_id=user_id, email=email, full_name=full_name)
    return EventEnvelope.new("user.registered", data, source="user_service")


def order_event(
    type_: str,
    user_id: uuid.UUID,
    order_id: uuid.UUID | None = None,
    *,
    reason: str | None = None,
    total: str = "25.98",
) -> EventEnvelope:
    data = OrderChanged(
        order_id=order_id or uuid.uuid4(),
        user_id=user_id,
        status=type_.removeprefix("order."),
        items=[OrderItem(product_id=uuid.uuid4(), quantity=2)],
        total_amount=Decimal(total),
        reason=reason,
    )
    return EventEnvelope.new(type_, data, source="order_service")


async def process(app: FastAPI, event: EventEnvelope) -> bool:
    """Hand the event to the app's consumer as a delivery would (inbox and handler in
    one transaction); False when it was processed before."""
    processed: bool = await app.state.events.consumer.process(event)
    return processed


class FakeSmtp:
    """An SMTP server that keeps what it accepts, and refuses the next `refuse` messages
    with a temporary error (451)."""

    def __init__(self) -> None:
        self.messages: list[Envelope] = []
        self.refuse = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.refuse > 0:
            self.refuse -= 1
            return "451 4.3.0 Try again later"
        self.messages.append(envelope)
        return "250 OK"

    def text(self, index: int = -1) -> str:
        content = self.messages[index].content
        assert isinstance(content, bytes)
        return content.decode()


@pytest.fixture
def smtp_server() -> Iterator[tuple[FakeSmtp, int]]:
    handler = FakeSmtp()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def smtp_settings(settings: Settings, port: int, **overrides: Any) -> Settings:
    return settings.model_copy(
        update={
            "smtp_host": "127.0.0.1",
            "smtp_port": port,
            "smtp_use_tls": False,
            "smtp_from": "Shop <shop@example.com>",
            **overrides,
        }
    )


async def notifications(
    client: AsyncClient, headers: dict[str, str], **params: Any
) -> dict[str, Any]:
    response = await client.get("/v1/notifications", headers=headers, params=params)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


async def stored(app: FastAPI) -> list[Notification]:
    async with app.state.database.sessionmaker() as session:
        return list((await session.scalars(select(Notification))).all())


class TestWelcome:
    async def test_a_registered_user_gets_a_welcome_notification(
        self, app: FastAPI, client: AsyncClient, tokens: LocalTokens
    ) -> None:
        user_id = uuid.uuid4()

        assert await process(app, user_registered(user_id, "ada@example.com", "Ada Lovelace"))

        page = await notifications(client, tokens.headers(user_id))
        assert page["total"] == 1
        (item,) = page["items"]
        assert set(item) == {
            "id",
            "user_id",
            "kind",
            "subject",
            "body",
            "status",
            "order_id",
            "created_at",
        }
        assert (item["kind"], item["status"], item["order_id"]) == ("welcome", "recorded", None)
        assert item["user_id"] == str(user_id)
        assert "Ada Lovelace" in item["subject"]
        assert "ada@example.com" in item["body"]
        (notification,) = await stored(app)
        assert (notification.recipient, notification.attempts) == ("ada@example.com", 0)

    async def test_the_same_event_twice_notifies_once(self, app: FastAPI) -> None:
        event = user_registered(uuid.uuid4())

        assert await process(app, event)
        assert not await process(app, event)

        assert len(await stored(app)) == 1


class TestOrderNotifications:
    async def test_each_order_event_mails_the_owner(
        self, app: FastAPI, client: AsyncClient, tokens: LocalTokens
    ) -> None:
        user_id, order_id = uuid.uuid4(), uuid.uuid4()
        await process(app, user_registered(user_id, "grace@example.com", "Grace Hopper"))

        await process(app, order_event("order.confirmed", user_id, order_id, total="25.98"))
        await process(app, order_event("order.shipped", user_id, order_id))
        await process(
            app, order_event("order.cancelled", user_id, reason="payment_declined", total="5.00")
        )

        items = (await notifications(client, tokens.headers(user_id)))["items"]
        kinds = [item["kind"] for item in items]
        assert kinds == ["order_cancelled", "order_shipped", "order_confirmed", "welcome"]
        confirmed = items[2]
        assert confirmed["order_id"] == str(order_id)
        assert "25.98" in confirmed["body"]
        assert "Grace Hopper" in confirmed["body"]
        assert "payment was declined" in items[0]["body"]
        assert all(n.recipient == "grace@example.com" for n in await stored(app))

    async def test_an_order_e_mail_reads_like_a_receipt(
        self, app: FastAPI, client: AsyncClient, tokens: LocalTokens
    ) -> None:
        user_id, mug, tea = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        await process(app, user_registered(user_id, "grace@example.com", "Grace Hopper"))
        data = OrderChanged(
            order_id=uuid.uuid4(),
            user_id=user_id,
            status="confirmed",
            items=[
                OrderItem(
                    product_id=mug,
                    quantity=2,
                    product_name="Blue mug",
                    unit_price=Decimal("12.99"),
                    line_total=Decimal("25.98"),
                ),
                OrderItem(
                    product_id=tea,
                    quantity=1,
                    product_name="Green tea",
                    unit_price=Decimal("4.50"),
                    line_total=Decimal("4.50"),
                ),
            ],
            total_amount=Decimal("30.48"),
            currency="EUR",
            shipping_address=ShippingAddress(
                full_name="Grace Hopper",
                line1="Unter den Linden 1",
                city="Berlin",
                postal_code="10117",
                country="DE",
            ),
        )

        await process(app, EventEnvelope.new("order.confirmed", data, source="order_service"))

        body = (await notifications(client, tokens.headers(user_id)))["items"][0]["body"]
        assert "2 x Blue mug at 12.99 EUR = 25.98 EUR" in body
        assert "1 x Green tea at 4.50 EUR = 4.50 EUR" in body
        assert "Total: 30.48 EUR" in body
        assert "Unter den Linden 1\n  10117 Berlin\n  Germany\n" in body
        assert str(mug) not in body
        assert str(tea) not in body

    async def test_a_refund_mails_what_was_paid_back(
        self, app: FastAPI, client: AsyncClient, tokens: LocalTokens
    ) -> None:
        user_id, order_id, mug = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        await process(app, user_registered(user_id, "grace@example.com", "Grace Hopper"))
        data = OrderRefunded(
            order_id=order_id,
            user_id=user_id,
            refund_id=uuid.uuid4(),
            amount=Decimal("25.98"),
            items=[
                OrderItem(
                    product_id=mug,
                    quantity=2,
                    product_name="Blue mug",
                    unit_price=Decimal("12.99"),
                    line_total=Decimal("25.98"),
                )
            ],
            restock=True,
            currency="USD",
            reason="arrived broken",
        )
        event = EventEnvelope.new("order.refunded", data, source="order_service")

        assert await process(app, event)
        assert not await process(app, event)

        items = (await notifications(client, tokens.headers(user_id)))["items"]
        refunded = [item for item in items if item["kind"] == "order_refunded"]
        assert len(refunded) == 1
        assert refunded[0]["order_id"] == str(order_id)
        assert refunded[0]["subject"] == f"Your refund of 25.98 USD for order {str(order_id)[:8]}"
        assert "2 x Blue mug at 12.99 USD = 25.98 USD" in refunded[0]["body"]
        assert "Refunded: 25.98 USD" in refunded[0]["body"]
        assert "(arrived broken)" in refunded[0]["body"]

    async def test_an_order_event_before_the_user_is_known_waits_for_it(self, app: FastAPI) -> None:
        user_id = uuid.uuid4()
        event = order_event("order.confirmed", user_id)

        # Raised, so the consumer hands it back; nothing of it is kept meanwhile.
        with pytest.raises(RecipientUnknown):
            await process(app, event)
        assert await stored(app) == []

        await process(app, user_registered(user_id))
        assert await process(app, event)
        assert sorted(n.kind.value for n in await stored(app)) == ["order_confirmed", "welcome"]

    async def test_order_created_mails_nothing(self, app: FastAPI) -> None:
        # Consumed all the same: every event type is owed to the webhooks of its type.
        assert set(app.state.events.consumer.handlers.types) == set(EVENT_TYPES)
        user_id = uuid.uuid4()
        await process(app, user_registered(user_id))

        assert await process(app, order_event("order.created", user_id))

        assert [n.kind.value for n in await stored(app)] == ["welcome"]


class TestListNotifications:
    async def test_own_only_newest_first_in_pages(
        self, app: FastAPI, client: AsyncClient, tokens: LocalTokens
    ) -> None:
        user_id, other = uuid.uuid4(), uuid.uuid4()
        await process(app, user_registered(user_id))
        await process(app, user_registered(other, "other@example.com"))
        orders = [uuid.uuid4() for _ in range(3)]
        for order_id in orders:
            await process(app, order_event("order.confirmed", user_id, order_id))

        headers = tokens.headers(user_id)
        first = await notifications(client, headers, limit=2)
        second = await notifications(client, headers, limit=2, offset=2)

        assert (first["total"], first["limit"], first["offset"]) == (4, 2, 0)
        ids = [item["order_id"] for item in first["items"] + second["items"]]
        assert ids == [str(o) for o in orders[::-1]] + [None]
        assert all(item["user_id"] == str(user_id) for item in first["items"] + second["items"])

    async def test_cursor_pages_follow_on_and_keep_to_the_owner(
        self, app: FastAPI, client: AsyncClient, tokens: LocalTokens
    ) -> None:
        user_id = uuid.uuid4()
        await process(app, user_registered(user_id))
        await process(app, user_registered(uuid.uuid4(), "other@example.com"))
        orders = [uuid.uuid4() for _ in range(3)]
        for order_id in orders:
            await process(app, order_event("order.confirmed", user_id, order_id))
        headers = tokens.headers(user_id)

        first = await notifications(client, headers, limit=3)
        newer = uuid.uuid4()
        await process(app, order_event("order.confirmed", user_id, newer))  # before the cursor
        second = await notifications(client, headers, limit=3, cursor=first["next_cursor"])

        ids = [item["order_id"] for item in first["items"] + second["items"]]
        assert ids == [str(o) for o in orders[::-1]] + [None]
        assert (second["offset"], second["total"], "next_cursor" in second) == (3, 5, False)
        other = tokens.headers(uuid.uuid4())
        refused = await client.get(
            "/v1/notifications", headers=other, params={"cursor": first["next_cursor"]}
        )
        assert_problem(refused, 422)  # another user's list

    async def test_administrators_see_everyone(
        self, app: FastAPI, client: AsyncClient, tokens: LocalTokens
    ) -> None:
        await process(app, user_registered(uuid.uuid4()))
        await process(app, user_registered(uuid.uuid4(), "b@example.com"))

        page = await notifications(client, tokens.headers(role="admin"))

        assert page["total"] == 2

    async def test_needs_a_token_and_a_sane_limit(
        self, client: AsyncClient, tokens: LocalTokens
    ) -> None:
        assert_problem(await client.get("/v1/notifications"), 401)
        response = await client.get(
            "/v1/notifications", params={"limit": 101}, headers=tokens.headers()
        )
        assert_problem(response, 422)


def sending_consumer(app: FastAPI, settings: Settings, topology: Topology) -> EventConsumer:
    """A consumer like the app's, with a mailer of other settings (never started: the
    tests hand it events)."""
    return EventConsumer(
        app.state.database,
        app.state.events.broker,
        topology,
        event_handlers(
            Mailer(settings), deliveries_due=asyncio.Event(), retry_window=timedelta(hours=1)
        ),
        service="notification_service",
    )


async def deliver(consumer: EventConsumer, event: EventEnvelope) -> None:
    assert await consumer.process(event)


class TestSmtp:
    def test_only_the_handlers_that_mail_are_marked_as_reaching_outside(
        self, settings: Settings
    ) -> None:
        """They are never run again because another event of their batch failed: the
        e-mail would go out twice."""

        def handlers(mailer: Mailer) -> EventHandlers:
            return event_handlers(
                mailer, deliveries_due=asyncio.Event(), retry_window=timedelta(hours=1)
            )

        sending = handlers(Mailer(smtp_settings(settings, free_port())))
        assert {t for t in EVENT_TYPES if sending.has_external_effects(t)} == {
            "user.registered",
            "order.confirmed",
            "order.cancelled",
            "order.shipped",
            "order.refunded",
        }
        silent = handlers(Mailer(settings))  # no SMTP server: nothing is sent
        assert not any(silent.has_external_effects(t) for t in EVENT_TYPES)

    async def test_sends_by_smtp_when_a_server_is_set(
        self,
        app: FastAPI,
        settings: Settings,
        topology: Topology,
        smtp_server: tuple[FakeSmtp, int],
    ) -> None:
        server, port = smtp_server
        consumer = sending_consumer(app, smtp_settings(settings, port), topology)
        user_id = uuid.uuid4()

        await deliver(consumer, user_registered(user_id, "ada@example.com", "Ada Lovelace"))
        await deliver(consumer, order_event("order.confirmed", user_id, total="12.50"))

        assert [m.rcpt_tos for m in server.messages] == [["ada@example.com"]] * 2
        assert server.messages[0].mail_from == "shop@example.com"
        assert "Subject: Welcome to" in server.text(0)
        assert "12.50" in server.text(1)
        assert {(n.status.value, n.attempts) for n in await stored(app)} == {("sent", 1)}

    async def test_a_refused_message_is_tried_again(
        self,
        app: FastAPI,
        settings: Settings,
        topology: Topology,
        smtp_server: tuple[FakeSmtp, int],
    ) -> None:
        server, port = smtp_server
        server.refuse = 2
        consumer = sending_consumer(app, smtp_settings(settings, port), topology)

        await deliver(consumer, user_registered(uuid.uuid4()))

        assert len(server.messages) == 1
        ((status, attempts),) = [(n.status.value, n.attempts) for n in await stored(app)]
        assert (status, attempts) == ("sent", 3)

    async def test_after_every_try_failed_it_is_stored_failed_and_not_sent_again(
        self,
        app: FastAPI,
        settings: Settings,
        topology: Topology,
        smtp_server: tuple[FakeSmtp, int],
    ) -> None:
        server, port = smtp_server
        server.refuse = 100
        consumer = sending_consumer(app, smtp_settings(settings, port), topology)
        event = user_registered(uuid.uuid4())

        await deliver(consumer, event)
        # A redelivery of the same event (the broker's at-least-once) sends nothing.
        assert not await consumer.process(event)

        assert server.refuse == 100 - 3
        ((status, attempts),) = [(n.status.value, n.attempts) for n in await stored(app)]
        assert (status, attempts) == ("failed", 3)
        # The address is kept all the same, for the user's order e-mails.
        async with app.state.database.sessionmaker() as session:
            assert await session.scalar(select(func.count()).select_from(Recipient)) == 1

    async def test_an_unreachable_server_ends_failed(
        self, app: FastAPI, settings: Settings, topology: Topology
    ) -> None:
        consumer = sending_consumer(
            app, smtp_settings(settings, free_port(), smtp_timeout_seconds=1.0), topology
        )

        await deliver(consumer, user_registered(uuid.uuid4()))

        ((status, attempts),) = [(n.status.value, n.attempts) for n in await stored(app)]
        assert (status, attempts) == ("failed", 3)


@pytest.mark.rabbitmq
class TestOverTheBroker:
    async def test_consumes_events_from_its_queue(
        self, app: FastAPI, client: AsyncClient, tokens: LocalTokens, topology: Topology
    ) -> None:
        await eventually(app.state.events.consumer.consuming.is_set, message="not consuming")
        user_id = uuid.uuid4()
        connection = await aio_pika.connect(RABBITMQ_URL)
        try:
            channel = await connection.channel()
            exchange = await declare_exchange(connection, channel, topology)
            for event in (user_registered(user_id), order_event("order.confirmed", user_id)):
                await exchange.publish(
                    aio_pika.Message(
                        event.to_json().encode(),
                        message_id=str(event.id),
                        content_type="application/json",
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=event.type,
                )
        finally:
            await connection.close()

        async def both_there() -> bool:
            return (await notifications(client, tokens.headers(user_id)))["total"] == 2

        await eventually(both_there, message="the notifications did not appear")
