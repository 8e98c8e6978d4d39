"""Checkout throughput: POST /api/v1/orders through the gateway with wrk, every service on
its own PostgreSQL database, each request with a fresh Idempotency-Key.

    make bench-checkout
    uv run python bench/checkout.py --duration 30 --connections 16 64 --products 10
    uv run python bench/checkout.py --tracing off on --rounds 3   # tracing overhead

Each order is one unit of a product stocked with far more than the run can sell, so
every order should be confirmed: the full saga (catalog lookup, reservation, sandbox
payment, commit) runs for each. With `--products 1` (the default) every reservation
updates the same stock row, the hardest case for inventory_service. Prints confirmed
orders per second, wrk's p50/p99 latency and errors (non-2xx answers and socket errors),
and the event lag: from an order's commit to its order_confirmed notification recorded by
notification_service (through the outbox, RabbitMQ and the consumer).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).parent))

from cost import CpuMeter, PerOrder, Profiler, difference, per_order, scrape, summarise
from lag import Delivery, Window, lag_report
from reference_run import measure_reference
from tracing import add_tracing_options, report_collector, spread, tracing_env, tracing_label
from wrk import WrkResult, run_wrk

from devstack import SERVICES, Stack, running_stack
from service_testing import (
    OtlpReceiver,
    delete_topology,
    free_port,
    postgres_database,
    unique_topology,
)

RESULTS = Path(__file__).parent / "results"
ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "bench-admin-password"  # noqa: S105 - a throw-away stack
STOCK = 100_000_000
#: Seconds of no load before each run, to measure what the system uses idle.
IDLE_SECONDS = 3

# Each wrk thread numbers its requests; the thread id and a random number per thread
# keep keys unique across threads and runs.
LUA = """
local threads = {}
local counter = 0

function setup(thread)
   table.insert(threads, thread)
   thread:set("id", #threads)
end

function init(args)
   math.randomseed(os.time() + id * 7919)
   prefix = string.format("bench-%d-%d-%d-", os.time(), id, math.random(1, 2147483647))
end

function request()
   counter = counter + 1
   local headers = {
      ["Content-Type"] = "application/json",
      ["Authorization"] = "Bearer __TOKEN__",
      ["Idempotency-Key"] = prefix .. counter,
   }
   return wrk.format("POST", "/api/v1/orders", headers, bodies[(counter % #bodies) + 1])
end

bodies = __BODIES__
"""


def call(
    method: str,
    url: str,
    *,
    json_body: Any = None,
    form: dict[str, str] | None = None,
    token: str | None = None,
) -> Any:
    headers = {}
    data = None
    if json_body is not None:
        data = json.dumps(json_body).encode()
        headers["Content-Type"] = "application/json"
    elif form is not None:
        data = urllib.parse.urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        body = response.read()
        return json.loads(body) if body else None


def login(gateway: str, email: str, password: str) -> str:
    form = {"username": email, "password": password}
    token: str = call("POST", f"{gateway}/api/v1/auth/token", form=form)["access_token"]
    return token


def seed(gateway: str, products: int) -> tuple[str, list[str]]:
    """A customer's access token and `products` products with plenty of stock."""
    admin = login(gateway, ADMIN_EMAIL, ADMIN_PASSWORD)
    product_ids = []
    for n in range(products):
        product = call(
            "POST",
            f"{gateway}/api/v1/products",
            json_body={
                "sku": f"BENCH-{n}-{uuid.uuid4().hex[:8]}",
                "name": f"Benchmark product {n}",
                "price": "9.99",
                "category": "bench",
            },
            token=admin,
        )
        call(
            "PUT",
            f"{gateway}/api/v1/inventory/{product['id']}",
            json_body={"available": STOCK},
            token=admin,
        )
        product_ids.append(product["id"])
    email = f"bench-{uuid.uuid4().hex[:8]}@example.com"
    call(
        "POST",
        f"{gateway}/api/v1/auth/register",
        json_body={"email": email, "password": "bench-password", "full_name": "Bench"},
    )
    return login(gateway, email, "bench-password"), product_ids


def confirmed_orders(database_urls: dict[str, str]) -> int:
    """Orders confirmed so far, read from order_service's database (the API may be
    slow to answer right after a run on a busy machine)."""

    async def count() -> int:
        connection = await asyncpg.connect(plain_dsn(database_urls["order_service"]), ssl=False)
        try:
            total: int = await connection.fetchval(
                "select count(*) from purchase_order where status = 'confirmed'"
            )
            return total
        finally:
            await connection.close()

    return asyncio.run(count())


def sessions_opened(database_urls: dict[str, str]) -> int:
    """Connections opened so far to the run's databases (PostgreSQL counts them): a pool
    that closes and reopens connections under load pays a login and its setup for each."""

    async def count() -> int:
        names = [plain_dsn(url).rsplit("/", 1)[1] for url in database_urls.values()]
        connection = await asyncpg.connect(plain_dsn(database_urls["order_service"]), ssl=False)
        try:
            total: int = await connection.fetchval(
                "select coalesce(sum(sessions), 0)::bigint from pg_stat_database"
                " where datname = any($1::text[])",
                names,
            )
            return total
        finally:
            await connection.close()

    return asyncio.run(count())


def plain_dsn(url: str) -> str:
    """asyncpg's own form of a SQLAlchemy URL (no driver name, no query options)."""
    return url.replace("+asyncpg", "").split("?", 1)[0]


async def event_deliveries(
    database_urls: dict[str, str], within: float = 60.0
) -> tuple[list[Delivery], list[Delivery]]:
    """Each confirmed order's commit and its order_confirmed notification's recording
    (read from the two services' databases once every notification is in); and the
    commit and the publishing of its `order.confirmed` event (the outbox's share)."""
    orders_db = await asyncpg.connect(plain_dsn(database_urls["order_service"]), ssl=False)
    notes_db = await asyncpg.connect(plain_dsn(database_urls["notification_service"]), ssl=False)
    try:
        confirmed = {
            row["id"]: row["updated_at"]
            for row in await orders_db.fetch(
                "select id, updated_at from purchase_order where status = 'confirmed'"
            )
        }
        deadline = time.monotonic() + within
        while True:
            recorded = {
                row["order_id"]: row["created_at"]
                for row in await notes_db.fetch(
                    "select order_id, created_at from notification where kind = 'order_confirmed'"
                )
            }
            if confirmed.keys() <= recorded.keys() or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        missing = len(confirmed.keys() - recorded.keys())
        if missing:
            print(f"  {missing} confirmed orders have no notification after {within:.0f} s")
        published = {
            row["order_id"]: row["published_at"]
            for row in await orders_db.fetch(
                "select (payload::json -> 'data' ->> 'order_id')::uuid as order_id, published_at"
                " from outbox_event where type = 'order.confirmed' and published_at is not null"
            )
        }
        return [
            (committed, recorded[order_id])
            for order_id, committed in confirmed.items()
            if order_id in recorded
        ], [
            (committed, published[order_id])
            for order_id, committed in confirmed.items()
            if order_id in published
        ]
    finally:
        await orders_db.close()
        await notes_db.close()


def write_script(directory: Path, token: str, product_ids: list[str]) -> str:
    bodies = [
        json.dumps(
            {"items": [{"product_id": product_id, "quantity": 1}], "payment_token": "tok_ok"}
        )
        for product_id in product_ids
    ]
    lua_bodies = "{" + ", ".join(f"[[{body}]]" for body in bodies) + "}"
    path = directory / "checkout.lua"
    path.write_text(LUA.replace("__TOKEN__", token).replace("__BODIES__", lua_bodies))
    return str(path)


def line(label: str, result: WrkResult, confirmed_per_second: float) -> str:
    return (
        f"  {label:<16} {confirmed_per_second:>7.0f} confirmed orders/s"
        f"   ({result.requests_per_second:.0f} req/s)   p50 {result.p50_ms:6.1f} ms"
        f"   p99 {result.p99_ms:7.1f} ms   errors {result.errors}"
    )


def run(
    args: argparse.Namespace,
    database_urls: dict[str, str],
    data_dir: Path,
    tracing: bool,
    report: dict[str, Any],
) -> tuple[int, dict[int, float]]:
    """One stack on the given databases; returns the error count and the confirmed
    orders per second per connection count."""
    ports = {spec.name: free_port() for spec in SERVICES}
    env = {
        "RATE_LIMIT_PER_MINUTE": "0",
        "LOG_LEVEL": "WARNING",
        "ADMIN_EMAIL": ADMIN_EMAIL,
        "ADMIN_PASSWORD": ADMIN_PASSWORD,
        "DATA_DIR": str(data_dir),
        "DATABASE_POOL_SIZE": "5",
        "DATABASE_MAX_OVERFLOW": "10",
        "ACCESS_TOKEN_TTL_SECONDS": "3600",
        **{f"{name.upper()}_DATABASE_URL": url for name, url in database_urls.items()},
    }
    # Exchange and queues of this run's own: the local broker may carry other stacks'
    # events (`make run`, tests), whose consumers would take this run's.
    topology = unique_topology("bench-checkout")
    env.update(EVENTS_EXCHANGE=topology.exchange, EVENTS_QUEUE_PREFIX=topology.queue_prefix)
    errors = 0
    rates: dict[int, float] = {}
    with OtlpReceiver(keep=False) as collector:
        if tracing:
            env.update(tracing_env(args, collector))
        with running_stack(ports, data_dir, env, seed=False) as stack:
            windows: list[Window] = []
            errors = drive(args, stack, database_urls, data_dir, tracing, report, rates, windows)
            deliveries, published = asyncio.run(event_deliveries(database_urls))
        lines, summary = lag_report(deliveries, windows, published)
        print("\n".join(lines))
        report.setdefault("event_lag_seconds", {})["on" if tracing else "off"] = summary
        if tracing:
            report_collector(collector)
    asyncio.run(delete_topology(topology, tuple(spec.name for spec in SERVICES)))
    return errors, rates


def measured_wrk(
    args: argparse.Namespace,
    stack: Stack,
    database_urls: dict[str, str],
    connections: int,
    script: str,
    profile: Path | None,
) -> tuple[WrkResult, int, PerOrder]:
    """One wrk run with its confirmed orders and their cost per order."""
    gateway_url = stack.gateway_url
    pids = {name: process.pid for name, process in stack.processes.items()}
    databases = [plain_dsn(url).rsplit("/", 1)[1] for url in database_urls.values()]
    # What the system burns with no orders (pollers, gauges, the broker), per second: on a
    # machine shared with other work the figure per order is also given without it.
    idle = CpuMeter(pids, databases)
    idle.start()
    time.sleep(IDLE_SECONDS)
    idle_per_second = {name: used / IDLE_SECONDS for name, used in idle.stop().items()}
    before = confirmed_orders(database_urls)
    sessions_before = sessions_opened(database_urls)
    metrics_before = {name: scrape(stack.url(name)) for name in pids}
    meter = CpuMeter(pids, databases)
    profiler = None if profile is None else Profiler(profile, pids, args.duration)
    meter.start()
    if profiler is not None:
        profiler.start()
    url = f"{gateway_url}/api/v1/orders"
    result = run_wrk(url, connections=connections, duration=args.duration, script=script)
    cpu = meter.stop()
    if profiler is not None:
        profiler.wait()
    confirmed = confirmed_orders(database_urls) - before
    metrics = {name: difference(scrape(stack.url(name)), metrics_before[name]) for name in pids}
    cost = per_order(confirmed, cpu, metrics)
    # Less the two this function opens to count.
    opened = sessions_opened(database_urls) - sessions_before - 2
    cost.counts["PostgreSQL connections opened"] = opened / max(confirmed, 1)
    idle_seconds = sum(idle_per_second.values()) * args.duration
    cost.busy_cpu_ms = (sum(cpu.values()) - idle_seconds) * 1000 / max(confirmed, 1)
    cost.idle_ms_per_second = {name: used * 1000 for name, used in idle_per_second.items()}
    return result, confirmed, cost


def drive(
    args: argparse.Namespace,
    stack: Stack,
    database_urls: dict[str, str],
    data_dir: Path,
    tracing: bool,
    report: dict[str, Any],
    rates: dict[int, float],
    windows: list[Window],
) -> int:
    gateway_url = stack.gateway_url
    token, product_ids = seed(gateway_url, args.products)
    script = write_script(data_dir, token, product_ids)
    url = f"{gateway_url}/api/v1/orders"
    run_wrk(url, connections=8, duration=3, script=script)  # warm up pools and caches
    print(
        f"\ncheckout through the gateway, {args.products} product(s), PostgreSQL, "
        f"{tracing_label(args, tracing)}"
    )
    errors = 0
    for connections in args.connections:
        profile = None
        if args.profile is not None:
            profile = args.profile / f"{'traced' if tracing else 'untraced'}-{connections}"
        start = datetime.now(UTC)
        result, confirmed, cost = measured_wrk(
            args, stack, database_urls, connections, script, profile
        )
        windows.append(Window(connections, start, datetime.now(UTC)))
        per_second = rates[connections] = confirmed / args.duration
        errors += result.errors
        print(line(f"{connections} connections", result, per_second))
        print("\n".join(cost.lines()))
        if profile is not None:
            print(f"  py-spy profiles in {profile} (the profiler's own cost is in these figures)")
            print("\n".join(summarise(profile)))
        report["runs"].append(
            {
                "connections": connections,
                "tracing": tracing,
                "confirmed_orders": confirmed,
                "confirmed_per_second": round(per_second, 1),
                "wrk": result.as_dict(),
                "cpu_ms_per_order": {k: round(v, 2) for k, v in cost.cpu_ms.items()},
                "cpu_ms_per_order_above_idle": round(cost.busy_cpu_ms, 2),
                "per_order": {k: round(v, 3) for k, v in cost.counts.items()},
                "mean_ms_per_request": {k: round(v, 2) for k, v in cost.route_ms.items()},
                "mean_ms_per_checkout_step": {k: round(v, 2) for k, v in cost.step_ms.items()},
            }
        )
    return errors


def compare_with_reference(
    args: argparse.Namespace, database_url: str, rates: dict[int, float], report: dict[str, Any]
) -> int:
    """The same orders against the one-process reference, and the services' share of its
    rate; returns its error count."""
    runs, deliveries, windows = measure_reference(
        database_url, args.connections, args.duration, args.products, STOCK, write_script
    )
    print("\nthe same durable work in one process (bench/reference_checkout.py), PostgreSQL")
    errors = 0
    for run in runs:
        per_second = run.confirmed / args.duration
        errors += run.result.errors
        print(line(f"{run.connections} connections", run.result, per_second))
        parts = ", ".join(f"{name} {ms:.1f}" for name, ms in run.cost.cpu_ms.items())
        print(f"  CPU per confirmed order: {run.cost.total_cpu_ms:.1f} ms   ({parts})")
        report["reference"].append(
            {
                "connections": run.connections,
                "confirmed_per_second": round(per_second, 1),
                "wrk": run.result.as_dict(),
                "cpu_ms_per_order": {k: round(v, 2) for k, v in run.cost.cpu_ms.items()},
            }
        )
    lines, summary = lag_report(deliveries, windows)
    print("\n".join(lines))
    report["reference_event_lag_seconds"] = summary
    print("\nservices / one process (confirmed orders/s)")
    for run in runs:
        ratio = rates[run.connections] / max(run.confirmed / args.duration, 1e-9)
        report["ratio_to_reference"][run.connections] = round(ratio, 3)
        print(f"  {run.connections:>4} connections   {ratio:5.2f}x")
    return errors


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=15, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 32, 256])
    parser.add_argument("--products", type=int, default=1, help="products the orders spread over")
    parser.add_argument(
        "--profile",
        type=Path,
        help="record every process with py-spy into this folder and print the top costs",
    )
    parser.add_argument(
        "--no-reference",
        dest="reference",
        action="store_false",
        help="skip the one-process reference (bench/reference_checkout.py)",
    )
    add_tracing_options(parser)
    args = parser.parse_args()

    report: dict[str, Any] = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "products": args.products,
        "runs": [],
        "reference": [],
        "ratio_to_reference": {},
    }
    errors = 0
    rounds: list[dict[str, dict[int, float]]] = []
    for _ in range(args.rounds):
        rates: dict[str, dict[int, float]] = {}
        for mode in args.tracing:
            # Fresh databases for each stack: the same starting point for both.
            async with AsyncExitStack() as databases:
                urls = {
                    spec.name: await databases.enter_async_context(
                        postgres_database(f"bench_{spec.name}")
                    )
                    for spec in SERVICES
                    if spec.migrations
                }
                with tempfile.TemporaryDirectory() as data_dir:
                    failed, rates[mode] = await asyncio.to_thread(
                        run, args, urls, Path(data_dir), mode == "on", report
                    )
                    errors += failed
        rounds.append(rates)
    if args.reference and "off" in rounds[0]:
        async with postgres_database("bench_reference") as url:
            reference = await asyncio.to_thread(
                compare_with_reference, args, url, rounds[0]["off"], report
            )
        errors += reference
    if {"off", "on"} <= set(args.tracing):
        print(
            "\ntracing overhead (confirmed orders/s, on vs off)"
            + (f"; median of {len(rounds)} rounds (lowest to highest)" if len(rounds) > 1 else "")
        )
        for connections in rounds[0]["off"]:
            changes = [each["on"][connections] / each["off"][connections] - 1 for each in rounds]
            print(f"  {connections:>4} connections   {spread(changes)}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"checkout-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"\nresults: {out}")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
