"""`user.registered`: written to the outbox with the account, published by the relay."""

from __future__ import annotations

import json
from typing import Any

import aio_pika
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from eventbus import Topology
from eventbus.broker import declare_exchange
from service_testing import RABBITMQ_URL, eventually
from user_service.models import outbox_event


async def staged(app: FastAPI, type_: str = "user.registered") -> list[dict[str, Any]]:
    """The envelopes in the outbox, oldest first."""
    async with app.state.database.sessionmaker() as session:
        rows = await session.execute(
            select(outbox_event.c.payload)
            .where(outbox_event.c.type == type_)
            .order_by(outbox_event.c.occurred_at)
        )
        return [json.loads(payload) for (payload,) in rows]


class TestUserRegistered:
    async def test_registering_stages_the_event_with_the_account(
        self, app: FastAPI, api: Any
    ) -> None:
        user = await api.register("ada@example.com", full_name="Ada Lovelace")

        *_, event = await staged(app)
        assert event["type"] == "user.registered"
        assert event["source"] == "user_service"
        assert event["version"] == 1
        assert event["data"] == {
            "user_id": user["id"],
            "email": "ada@example.com",
            "full_name": "Ada Lovelace",
        }

    async def test_a_refused_registration_stages_nothing(
        self, app: FastAPI, api: Any, client: httpx.AsyncClient
    ) -> None:
        await api.register("ada@example.com")
        before = await staged(app)

        response = await client.post(
            "/v1/auth/register",
            json={"email": "ADA@example.com", "password": "another-pass", "full_name": "Ada"},
        )

        assert response.status_code == 409
        assert await staged(app) == before

    async def test_the_bootstrap_administrator_is_announced_too(self, app: FastAPI) -> None:
        events = await staged(app)  # the fixture recreated the administrator

        assert [event["data"]["email"] for event in events] == ["admin@example.com"]
        assert events[0]["data"]["full_name"] == "Administrator"

    @pytest.mark.rabbitmq
    async def test_the_relay_publishes_it(self, app: FastAPI, api: Any, topology: Topology) -> None:
        connection = await aio_pika.connect(RABBITMQ_URL)
        try:
            channel = await connection.channel()
            exchange = await declare_exchange(connection, channel, topology)
            probe = await channel.declare_queue(exclusive=True)
            await probe.bind(exchange, "user.registered")

            user = await api.register("grace@example.com", full_name="Grace Hopper")

            received: list[dict[str, Any]] = []

            async def grace_arrived() -> bool:
                message = await probe.get(fail=False, no_ack=True)
                if message is not None:
                    received.append(json.loads(message.body))
                return any(event["data"]["user_id"] == user["id"] for event in received)

            await eventually(grace_arrived, message="user.registered was not published")
        finally:
            await connection.close()
