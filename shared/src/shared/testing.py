"""Helpers for the services' test suites: throw-away databases, broker names of their own,
locally signed tokens and a local trace receiver.

Only tests import this module (it needs the dev dependencies)."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import inspect
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asyncpg
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from sqlalchemy import MetaData, text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.auth import TokenVerifier, UserStatus
from shared.events.broker import Topology
from shared.migrations import upgrade

#: Where the integration suite finds PostgreSQL (scripts/ensure-postgres.sh makes this role).
POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql://shop:shop@127.0.0.1:5432/postgres"
)


#: Where the integration suite finds RabbitMQ (scripts/ensure-rabbitmq.sh starts it).
RABBITMQ_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")


async def eventually(
    check: Callable[[], object], *, within: float = 15.0, message: str = ""
) -> None:
    """Wait until `check()` (a value or an awaitable) is truthy; raise AssertionError
    after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(message or f"not true within {within} s")
        await asyncio.sleep(0.05)


def unique_topology(label: str = "test") -> Topology:
    """Exchange and queue names no other test run uses (on the same broker)."""
    run = f"{label}-{uuid.uuid4().hex[:8]}"
    return Topology(exchange=f"{run}.events", queue_prefix=f"{run}.")


async def delete_topology(topology: Topology, services: tuple[str, ...] = ()) -> None:
    """Delete a test run's exchanges and the queues of `services` (best effort)."""
    import aio_pika

    try:
        connection = await aio_pika.connect(RABBITMQ_URL, timeout=5)
    except Exception:
        return  # no broker: nothing was declared on it either
    try:
        # A failed delete (already gone) closes its channel: one channel per delete.
        for service in services:
            for queue in (topology.queue(service), topology.dead_letter_queue(service)):
                with contextlib.suppress(Exception):
                    channel = await connection.channel()
                    await channel.queue_delete(queue, if_unused=False, if_empty=False)
        for exchange in (topology.exchange, topology.dead_letter_exchange):
            with contextlib.suppress(Exception):
                channel = await connection.channel()
                await channel.exchange_delete(exchange, if_unused=False)
    finally:
        await connection.close()


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


@asynccontextmanager
async def postgres_database(prefix: str) -> AsyncIterator[str]:
    """Create a fresh PostgreSQL database and drop it afterwards; yields its SQLAlchemy URL."""
    name = f"test_{prefix}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(_asyncpg_dsn(POSTGRES_ADMIN_URL))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    try:
        # The server is on the loopback: TLS would only cost a handshake per connection.
        yield f"{base}/{name}?ssl=disable"
    finally:
        admin = await asyncpg.connect(_asyncpg_dsn(POSTGRES_ADMIN_URL))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@asynccontextmanager
async def migrated_database(
    backend: str, service: str, alembic_ini: Path, tmp_dir: Path
) -> AsyncIterator[str]:
    """A database of `backend` ("sqlite" or "postgresql") migrated with the service's Alembic."""
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_dir / f'{service}.db'}"
        await asyncio.to_thread(upgrade, alembic_ini, url)
        yield url
        return
    async with postgres_database(service) as url:
        await asyncio.to_thread(upgrade, alembic_ini, url)
        yield url


async def truncate_all(engine: AsyncEngine, metadata: MetaData) -> None:
    """Empty every table between tests (far cheaper than migrating a database per test)."""
    tables = [table.name for table in reversed(metadata.sorted_tables)]
    async with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            await connection.execute(text(f"TRUNCATE {', '.join(tables)} CASCADE"))
        else:
            for table in tables:
                await connection.execute(text(f"DELETE FROM {table}"))  # noqa: S608 - our own names


class LocalTokens:
    """Signs tokens the way the user service does, for testing one service on its own.

    Stands in for the user service's JWKS and account status; the end-to-end suite
    covers the real thing."""

    def __init__(
        self, *, issuer: str = "ecommerce-user-service", audience: str = "ecommerce"
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "test-key"
        public_jwk = jwt.algorithms.RSAAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        self.jwk = jwt.PyJWK.from_dict(
            {**public_jwk, "kid": self.kid, "alg": "RS256", "use": "sig"}
        )
        self.statuses: dict[uuid.UUID, UserStatus] = {}

    async def get_key(self, kid: str, *, refresh: bool = False) -> jwt.PyJWK | None:
        return self.jwk if kid == self.kid else None

    async def get_status(self, user_id: uuid.UUID) -> UserStatus | None:
        return self.statuses.get(user_id)

    def verifier(self) -> TokenVerifier:
        return TokenVerifier(self, self, issuer=self.issuer, audience=self.audience)

    def token(
        self,
        user_id: uuid.UUID | None = None,
        *,
        role: str = "customer",
        active: bool = True,
        expires_in: int = 900,
        **claims: Any,
    ) -> str:
        user_id = user_id or uuid.uuid4()
        self.statuses[user_id] = UserStatus(is_active=active, role=role)
        now = int(time.time())
        payload = {
            "sub": str(user_id),
            "role": role,
            "iss": self.issuer,
            "aud": self.audience,
            "iat": now,
            "exp": now + expires_in,
            "jti": uuid.uuid4().hex,
            **claims,
        }
        return jwt.encode(payload, self.private_key, algorithm="RS256", headers={"kid": self.kid})

    def headers(self, user_id: uuid.UUID | None = None, **kwargs: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user_id, **kwargs)}"}


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    """Assert `response` (an httpx.Response) is an RFC 9457 problem document with `status`."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["title"], body
    assert body["type"], body
    assert body["detail"], body
    assert body["request_id"] == response.headers["x-request-id"]
    return body


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]


class OtlpReceiver:
    """A local OTLP/HTTP trace endpoint, in a thread: what a collector would be sent.

    Point `OTEL_EXPORTER_OTLP_ENDPOINT` at `endpoint`. `keep=False` makes it a sink for
    benchmarks, which counts the batches and bytes it is sent without decoding them, so
    that it takes next to nothing from the processes being measured."""

    def __init__(self, *, keep: bool = True) -> None:
        self.keep = keep
        self.spans: list[ReceivedSpan] = []
        self.received = 0
        self.batches = 0
        self.bytes_received = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if receiver.keep:
                    if self.headers.get("Content-Encoding") == "gzip":
                        body = gzip.decompress(body)
                    request = ExportTraceServiceRequest()
                    request.ParseFromString(body)
                    receiver._add(request)
                else:
                    receiver._count(len(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _count(self, size: int) -> None:
        with self._lock:
            self.batches += 1
            self.bytes_received += size

    def _add(self, request: ExportTraceServiceRequest) -> None:
        spans = []
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans.append(
                        ReceivedSpan(
                            service=str(resource.get("service.name", "")),
                            name=span.name,
                            kind=Span.SpanKind.Name(span.kind),
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            attributes=_attributes(span.attributes),
                        )
                    )
        with self._lock:
            self.received += len(spans)
            if self.keep:
                self.spans.extend(spans)

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        with self._lock:
            return [span for span in self.spans if span.trace_id == trace_id]


def _attributes(values: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for item in values:
        kind = item.value.WhichOneof("value")
        found[item.key] = getattr(item.value, kind) if kind else None
    return found
