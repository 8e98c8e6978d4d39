"""Drive `reference_checkout.py` (the checkout's durable work in one process) with the same
wrk script and counters as the services, for `bench/checkout.py` to print side by side."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
import jwt
from cost import CpuMeter, PerOrder, per_order
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from lag import Delivery, Window
from wrk import WrkResult, run_wrk

from devstack import REPO_ROOT
from service_testing import RABBITMQ_URL, delete_topology, free_port, unique_topology

REFERENCE = "reference"


@dataclass
class ReferenceRun:
    connections: int
    result: WrkResult
    confirmed: int
    cost: PerOrder


def plain_dsn(url: str) -> str:
    return url.replace("+asyncpg", "").split("?", 1)[0]


async def _count(dsn: str, query: str) -> int:
    connection = await asyncpg.connect(dsn, ssl=False)
    try:
        return int(await connection.fetchval(query))
    finally:
        await connection.close()


async def _seed(dsn: str, product_ids: list[uuid.UUID], stock: int) -> None:
    connection = await asyncpg.connect(dsn, ssl=False)
    try:
        for n, product_id in enumerate(product_ids):
            await connection.execute(
                "insert into product (id, name, price, is_active) values ($1, $2, $3, true)",
                product_id,
                f"Benchmark product {n}",
                Decimal("9.99"),
            )
            await connection.execute(
                "insert into stock (product_id, available) values ($1, $2)", product_id, stock
            )
    finally:
        await connection.close()


def confirmed(dsn: str) -> int:
    query = "select count(*) from purchase_order where status = 'confirmed'"
    return asyncio.run(_count(dsn, query))


async def _deliveries(dsn: str, within: float = 60.0) -> list[Delivery]:
    connection = await asyncpg.connect(dsn, ssl=False)
    try:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            pending = await connection.fetchval(
                "select count(*) from purchase_order o where status = 'confirmed' and not exists"
                " (select 1 from notification n where n.order_id = o.id)"
            )
            if not pending:
                break
            await asyncio.sleep(0.5)
        rows = await connection.fetch(
            "select o.updated_at, n.created_at from purchase_order o"
            " join notification n on n.order_id = o.id where o.status = 'confirmed'"
        )
        return [(row["updated_at"], row["created_at"]) for row in rows]
    finally:
        await connection.close()


@contextmanager
def running_reference(database_url: str) -> Iterator[tuple[subprocess.Popen[bytes], str, str]]:
    """The reference app on a free port; yields the process, its URL and a customer token."""
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    topology = unique_topology("bench-reference")
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(Path(__file__).parent),
        "REFERENCE_DATABASE_URL": plain_dsn(database_url),
        "RABBITMQ_URL": RABBITMQ_URL,
        "REFERENCE_JWT_PUBLIC_KEY": public.decode(),
        "REFERENCE_EXCHANGE": topology.exchange,
        "REFERENCE_QUEUE": topology.queue(REFERENCE),
    }
    args = [sys.executable, "-m", "uvicorn", "--factory", "reference_checkout:create_app"]
    args += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    args += ["--log-level", "warning"]
    process = subprocess.Popen(args, cwd=REPO_ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/openapi.json", timeout=1):  # noqa: S310
                    break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise TimeoutError("the reference checkout did not start") from None
                time.sleep(0.2)
        now = datetime.now(UTC)
        token = jwt.encode(
            {
                "sub": str(uuid.uuid4()),
                "aud": REFERENCE,
                "iat": now,
                "exp": now + timedelta(hours=1),
            },
            key,
            algorithm="EdDSA",
        )
        yield process, url, token
    finally:
        process.terminate()
        process.wait(timeout=15)
        asyncio.run(delete_topology(topology, (REFERENCE,)))


def measure_reference(
    database_url: str,
    connections: list[int],
    duration: int,
    products: int,
    stock: int,
    write_script: Callable[[Path, str, list[str]], str],
) -> tuple[list[ReferenceRun], list[Delivery], list[Window]]:
    """Every connection count against the reference: the runs, each confirmed order's
    commit and notification, and each run's time window."""
    dsn = plain_dsn(database_url)
    runs = []
    windows: list[Window] = []
    with (
        running_reference(database_url) as (process, url, token),
        tempfile.TemporaryDirectory() as tmp,
    ):
        product_ids = [uuid.uuid4() for _ in range(products)]
        asyncio.run(_seed(dsn, product_ids, stock))
        script = write_script(Path(tmp), token, [str(p) for p in product_ids])
        run_wrk(f"{url}/api/v1/orders", connections=8, duration=3, script=script)
        database = dsn.rsplit("/", 1)[1]
        for count in connections:
            start = datetime.now(UTC)
            before = confirmed(dsn)
            meter = CpuMeter({REFERENCE: process.pid}, [database])
            meter.start()
            result = run_wrk(
                f"{url}/api/v1/orders", connections=count, duration=duration, script=script
            )
            cpu = meter.stop()
            done = confirmed(dsn) - before
            runs.append(ReferenceRun(count, result, done, per_order(done, cpu, {})))
            windows.append(Window(count, start, datetime.now(UTC)))
        deliveries = asyncio.run(_deliveries(dsn))
    return runs, deliveries, windows
