"""`product.created` and `product.updated`: written to the outbox with the change,
published by the relay."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import select

from eventbus import Topology
from eventbus.broker import declare_exchange
from product_service.models import outbox_event
from product_service.seed import demo_products, seed_catalog
from service_testing import RABBITMQ_URL, eventually

MakeProduct = Callable[..., Awaitable[dict[str, Any]]]


async def staged(app: FastAPI) -> list[dict[str, Any]]:
    """The envelopes in the outbox, oldest first."""
    async with app.state.database.sessionmaker() as session:
        rows = await session.execute(
            select(outbox_event.c.payload).order_by(outbox_event.c.occurred_at)
        )
        return [json.loads(payload) for (payload,) in rows]


def summary(events: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    return [(event["type"], event["data"]) for event in events]


class TestProductEvents:
    async def test_creating_stages_product_created(
        self, app: FastAPI, make_product: MakeProduct
    ) -> None:
        product = await make_product(sku="LAMP-01", name="Desk lamp", price="24.9")

        [event] = await staged(app)
        assert event["source"] == "product_service"
        assert summary([event]) == [
            (
                "product.created",
                {
                    "product_id": product["id"],
                    "sku": "LAMP-01",
                    "name": "Desk lamp",
                    "price": "24.90",
                    "is_active": True,
                },
            )
        ]

    async def test_changing_and_deactivating_stage_product_updated(
        self, app: FastAPI, client: AsyncClient, admin: dict[str, str], make_product: MakeProduct
    ) -> None:
        product = await make_product(sku="LAMP-01", name="Desk lamp", price="24.90")
        url = f"/v1/products/{product['id']}"

        patched = await client.patch(url, json={"price": "19.99"}, headers=admin)
        deleted = await client.delete(url, headers=admin)
        deleted_again = await client.delete(url, headers=admin)

        assert (patched.status_code, deleted.status_code, deleted_again.status_code) == (
            200,
            204,
            204,
        )
        facts = {"product_id": product["id"], "sku": "LAMP-01", "name": "Desk lamp"}
        assert summary(await staged(app)) == [
            ("product.created", {**facts, "price": "24.90", "is_active": True}),
            ("product.updated", {**facts, "price": "19.99", "is_active": True}),
            # The second delete changed nothing, and said nothing.
            ("product.updated", {**facts, "price": "19.99", "is_active": False}),
        ]

    async def test_refused_changes_stage_nothing(
        self, app: FastAPI, client: AsyncClient, admin: dict[str, str], make_product: MakeProduct
    ) -> None:
        await make_product(sku="LAMP-01")
        before = await staged(app)
        missing = "/v1/products/00000000-0000-4000-8000-000000000000"

        duplicate = await client.post(
            "/v1/products",
            json={"sku": "LAMP-01", "name": "Other", "price": "1.00", "category": "x"},
            headers=admin,
        )
        unknown = await client.patch(missing, json={"name": "x"}, headers=admin)

        assert (duplicate.status_code, unknown.status_code) == (409, 404)
        assert await staged(app) == before

    async def test_the_seed_announces_what_it_added(self, app: FastAPI) -> None:
        async with app.state.database.sessionmaker() as session:
            await seed_catalog(session)
        async with app.state.database.sessionmaker() as session:
            await seed_catalog(session)

        events = await staged(app)
        assert {event["type"] for event in events} == {"product.created"}
        assert sorted(event["data"]["sku"] for event in events) == sorted(
            product.sku for product in demo_products()
        )

    @pytest.mark.rabbitmq
    async def test_the_relay_publishes_them(
        self, make_product: MakeProduct, topology: Topology
    ) -> None:
        connection = await aio_pika.connect(RABBITMQ_URL)
        try:
            channel = await connection.channel()
            exchange = await declare_exchange(connection, channel, topology)
            probe = await channel.declare_queue(exclusive=True)
            await probe.bind(exchange, "product.*")

            product = await make_product(sku="PUB-1")

            received: list[aio_pika.abc.AbstractIncomingMessage] = []

            async def arrived() -> bool:
                message = await probe.get(fail=False, no_ack=True)
                if message is not None:
                    received.append(message)
                return any(json.loads(m.body)["data"]["sku"] == "PUB-1" for m in received)

            await eventually(arrived, message="product.created was not published")
        finally:
            await connection.close()
        [message] = [m for m in received if json.loads(m.body)["data"]["sku"] == "PUB-1"]
        assert message.routing_key == "product.created"
        assert json.loads(message.body)["data"]["product_id"] == product["id"]
