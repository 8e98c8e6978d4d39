"""The checkout's durable work in one process, the yardstick `bench/checkout.py` measures
the services against (like `bare_product.py` for the product read).

One FastAPI app on one PostgreSQL database and RabbitMQ, with the guarantees the
services give and none of the hops: the customer's bearer token verified (EdDSA JWT);
the Idempotency-Key claimed, replayed or refused (422 for another body) in the order's
transaction; prices read from the catalog; the stock taken by a conditional UPDATE
(never oversold); the order, its `order.confirmed` event in the outbox and the stored
answer committed together. A relay woken by each commit publishes the outbox with
publisher confirms (persistent, mandatory) to a durable topic exchange and marks the rows
published; a consumer of a quorum queue records each event id in an inbox and writes the
notification in the same transaction, then acks. What it leaves out is what splitting
into services adds: HTTP calls between them, a reservation held then committed, and a
saga of commits instead of one transaction.

    uvicorn --factory reference_checkout:create_app --app-dir bench

Environment: REFERENCE_DATABASE_URL (asyncpg DSN), RABBITMQ_URL, REFERENCE_JWT_PUBLIC_KEY
(PEM), REFERENCE_EXCHANGE and REFERENCE_QUEUE (names of this run's own).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import aio_pika
import asyncpg
import jwt
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustExchange
from fastapi import FastAPI, Header, HTTPException, Request, Response
from pydantic import BaseModel, ConfigDict, Field

SCHEMA = """
create table if not exists product (
    id uuid primary key, name text not null, price numeric(12, 2) not null,
    is_active boolean not null);
create table if not exists stock (
    product_id uuid primary key references product, available integer not null
    check (available >= 0), sold integer not null default 0);
create table if not exists idempotency_key (
    user_id uuid, key text, fingerprint bytea not null, status_code integer,
    response bytea, primary key (user_id, key));
create table if not exists purchase_order (
    id uuid primary key, user_id uuid not null, status text not null, cancel_reason text,
    items jsonb not null, total_amount numeric(12, 2) not null, currency text not null,
    created_at timestamptz not null, updated_at timestamptz not null);
create table if not exists outbox (
    id uuid primary key, type text not null, body bytea not null,
    created_at timestamptz not null, published_at timestamptz);
create index if not exists outbox_pending on outbox (created_at) where published_at is null;
create table if not exists inbox (event_id uuid primary key, received_at timestamptz not null);
create table if not exists notification (
    id uuid primary key, user_id uuid not null, order_id uuid, kind text not null,
    body text not null, created_at timestamptz not null);
"""

TAKE_STOCK = """
update stock set available = available - $2, sold = sold + $2
where product_id = $1 and available >= $2
returning product_id
"""
OUTBOX_BATCH = 500


class Line(BaseModel):
    model_config = ConfigDict(extra="forbid")
    product_id: uuid.UUID
    quantity: int = Field(ge=1, le=100)


class OrderCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[Line] = Field(min_length=1, max_length=50)
    payment_token: Literal["tok_ok", "tok_decline"]


class OutOfStock(Exception):
    """A line's stock was short: the order's transaction is rolled back."""


class Reference:
    """The process's pool, broker connection and background tasks."""

    def __init__(self, pool: asyncpg.Pool, exchange: AbstractRobustExchange) -> None:
        self.pool = pool
        self.exchange = exchange
        self.wakeup = asyncio.Event()

    async def place(
        self, user_id: uuid.UUID, key: str, order: OrderCreate, fingerprint: bytes
    ) -> tuple[int, bytes]:
        try:
            return await self._place(user_id, key, order, fingerprint, take_stock=True)
        except OutOfStock:
            # The order is recorded cancelled, in a transaction of its own.
            return await self._place(user_id, key, order, fingerprint, take_stock=False)

    async def _place(
        self,
        user_id: uuid.UUID,
        key: str,
        order: OrderCreate,
        fingerprint: bytes,
        *,
        take_stock: bool,
    ) -> tuple[int, bytes]:
        async with self.pool.acquire() as connection, connection.transaction():
            claimed = await connection.fetchval(
                "insert into idempotency_key (user_id, key, fingerprint) values ($1, $2, $3)"
                " on conflict do nothing returning true",
                user_id,
                key,
                fingerprint,
            )
            if not claimed:
                return await _replay(connection, user_id, key, fingerprint)
            lines = sorted(order.items, key=lambda line: line.product_id)
            products = {
                row["id"]: row
                for row in await connection.fetch(
                    "select id, name, price from product where id = any($1::uuid[]) and is_active",
                    [line.product_id for line in lines],
                )
            }
            if len(products) != len(lines):
                raise HTTPException(422, "unknown or inactive product")
            reason = None
            if order.payment_token == "tok_decline":  # noqa: S105 - the sandbox token
                reason = "payment_declined"
            elif not take_stock:
                reason = "out_of_stock"
            else:
                for line in lines:
                    if (
                        await connection.fetchval(TAKE_STOCK, line.product_id, line.quantity)
                        is None
                    ):
                        raise OutOfStock
            body = _order_document(user_id, lines, products, reason)
            status = "cancelled" if reason else "confirmed"
            await connection.execute(
                "insert into purchase_order (id, user_id, status, cancel_reason, items,"
                " total_amount, currency, created_at, updated_at)"
                " values ($1, $2, $3, $4, $5, $6, 'USD', $7, $7)",
                uuid.UUID(body["id"]),
                user_id,
                status,
                reason,
                json.dumps(body["items"]),
                Decimal(body["total_amount"]),
                datetime.fromisoformat(body["created_at"]),
            )
            event_id = uuid.uuid4()
            envelope = {
                "id": str(event_id),
                "type": f"order.{status}",
                "occurred_at": body["created_at"],
                "source": "reference",
                "version": 1,
                "data": body,
            }
            await connection.execute(
                "insert into outbox (id, type, body, created_at) values ($1, $2, $3, now())",
                event_id,
                envelope["type"],
                json.dumps(envelope).encode(),
            )
            answer = json.dumps(body).encode()
            await connection.execute(
                "update idempotency_key set status_code = 201, response = $3"
                " where user_id = $1 and key = $2",
                user_id,
                key,
                answer,
            )
        self.wakeup.set()
        return 201, answer

    async def relay(self) -> None:
        """Publish the outbox after each commit (and every half second regardless)."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await self.wakeup.wait()
            self.wakeup.clear()
            while await self._publish_batch() == OUTBOX_BATCH:
                pass

    async def _publish_batch(self) -> int:
        async with self.pool.acquire() as connection, connection.transaction():
            rows = await connection.fetch(
                "select id, type, body from outbox where published_at is null"
                " order by created_at limit $1 for update skip locked",
                OUTBOX_BATCH,
            )
            if not rows:
                return 0
            # Published side by side; each publish returns once the broker confirmed it.
            await asyncio.gather(
                *(
                    self.exchange.publish(
                        aio_pika.Message(
                            row["body"],
                            message_id=str(row["id"]),
                            content_type="application/json",
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        ),
                        routing_key=row["type"],
                        mandatory=True,
                    )
                    for row in rows
                )
            )
            await connection.execute(
                "update outbox set published_at = now() where id = any($1::uuid[])",
                [row["id"] for row in rows],
            )
            return len(rows)

    async def consume(self, message: AbstractIncomingMessage) -> None:
        """Record the notification once per event id, then ack."""
        envelope = json.loads(message.body)
        data = envelope["data"]
        async with self.pool.acquire() as connection, connection.transaction():
            now = datetime.now(UTC)
            first = await connection.fetchval(
                "insert into inbox (event_id, received_at) values ($1, $2)"
                " on conflict do nothing returning true",
                uuid.UUID(envelope["id"]),
                now,
            )
            if first:
                lines = ", ".join(
                    f"{item['quantity']} x {item['product_name']}" for item in data["items"]
                )
                await connection.execute(
                    "insert into notification (id, user_id, order_id, kind, body, created_at)"
                    " values ($1, $2, $3, $4, $5, $6)",
                    uuid.uuid4(),
                    uuid.UUID(data["user_id"]),
                    uuid.UUID(data["id"]),
                    envelope["type"].replace(".", "_"),
                    f"{lines}; total {data['total_amount']} {data['currency']}",
                    now,
                )
        await message.ack()


async def _replay(
    connection: asyncpg.Connection, user_id: uuid.UUID, key: str, fingerprint: bytes
) -> tuple[int, bytes]:
    # The claim waited for the first request's transaction: its answer is stored.
    row = await connection.fetchrow(
        "select fingerprint, status_code, response from idempotency_key"
        " where user_id = $1 and key = $2",
        user_id,
        key,
    )
    if row["fingerprint"] != fingerprint:
        raise HTTPException(422, "Idempotency-Key reused with another body")
    if row["status_code"] is None:
        raise HTTPException(409, "the first request with this key is still running")
    return int(row["status_code"]), bytes(row["response"])


def _order_document(
    user_id: uuid.UUID,
    lines: list[Line],
    products: dict[uuid.UUID, Any],
    reason: str | None,
) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat()
    items = []
    total = Decimal("0.00")
    for line in lines:
        product = products[line.product_id]
        line_total = product["price"] * line.quantity
        total += line_total
        items.append(
            {
                "product_id": str(line.product_id),
                "product_name": product["name"],
                "unit_price": str(product["price"]),
                "quantity": line.quantity,
                "line_total": str(line_total),
            }
        )
    return {
        "id": str(uuid.uuid4()),
        "user_id": str(user_id),
        "status": "cancelled" if reason else "confirmed",
        "items": items,
        "total_amount": str(total),
        "currency": "USD",
        "cancel_reason": reason,
        "created_at": now,
        "updated_at": now,
    }


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    pool = await asyncpg.create_pool(os.environ["REFERENCE_DATABASE_URL"], min_size=2, max_size=15)
    async with pool.acquire() as connection:
        await connection.execute(SCHEMA)
    broker = await aio_pika.connect_robust(os.environ["RABBITMQ_URL"])
    publishing = await broker.channel(publisher_confirms=True)
    exchange = await publishing.declare_exchange(
        os.environ["REFERENCE_EXCHANGE"], aio_pika.ExchangeType.TOPIC, durable=True
    )
    consuming = await broker.channel()
    await consuming.set_qos(prefetch_count=32)
    queue = await consuming.declare_queue(
        os.environ["REFERENCE_QUEUE"], durable=True, arguments={"x-queue-type": "quorum"}
    )
    await queue.bind(os.environ["REFERENCE_EXCHANGE"], routing_key="order.*")
    reference = Reference(pool, exchange)
    app.state.reference = reference
    app.state.public_key = os.environ["REFERENCE_JWT_PUBLIC_KEY"]
    relay = asyncio.create_task(reference.relay())
    await queue.consume(reference.consume)
    try:
        yield
    finally:
        relay.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await relay
        await broker.close()
        await pool.close()


def create_app() -> FastAPI:
    app = FastAPI(lifespan=lifespan)

    @app.post("/api/v1/orders", status_code=201)
    async def place_order(
        order: OrderCreate,
        request: Request,
        idempotency_key: Annotated[str, Header(min_length=1, max_length=255)] = "",
    ) -> Response:
        user_id = _user_id(request)
        if not idempotency_key:
            raise HTTPException(400, "Idempotency-Key is required")
        fingerprint = hashlib.sha256(order.model_dump_json().encode()).digest()
        reference: Reference = request.app.state.reference
        status, body = await reference.place(user_id, idempotency_key, order, fingerprint)
        return Response(body, status_code=status, media_type="application/json")

    return app


def _user_id(request: Request) -> uuid.UUID:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        raise HTTPException(401, "a bearer token is required")
    try:
        claims = jwt.decode(
            token,
            request.app.state.public_key,
            algorithms=["EdDSA"],
            audience="reference",
            options={"require": ["sub", "exp"]},
        )
    except jwt.PyJWTError as error:
        raise HTTPException(401, "invalid token") from error
    return uuid.UUID(claims["sub"])
