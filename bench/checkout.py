"""Checkout throughput: POST /api/v1/orders through the gateway with wrk, every service on
its own PostgreSQL database, each request with a fresh Idempotency-Key.

    make bench-checkout
    uv run python bench/checkout.py --duration 30 --connections 16 64 --products 10

Each order is one unit of a product stocked with far more than the run can sell, so
every order should be confirmed: the full saga (catalog lookup, reservation, sandbox
payment, commit) runs for each. With `--products 1` (the default) every reservation
updates the same stock row, the hardest case for inventory_service. Prints confirmed
orders per second, wrk's p50/p99 latency and errors (non-2xx answers and socket errors).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from wrk import WrkResult, run_wrk

from shared.devstack import SERVICES, running_stack
from shared.testing import postgres_database

RESULTS = Path(__file__).parent / "results"
ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "bench-admin-password"  # noqa: S105 - a throw-away stack
STOCK = 100_000_000

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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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


def confirmed_orders(gateway: str) -> int:
    admin = login(gateway, ADMIN_EMAIL, ADMIN_PASSWORD)
    page = call("GET", f"{gateway}/api/v1/orders?status=confirmed&limit=1", token=admin)
    total: int = page["total"]
    return total


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


def run(args: argparse.Namespace, database_urls: dict[str, str], data_dir: Path) -> int:
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
    report: dict[str, Any] = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "products": args.products,
        "runs": [],
    }
    errors = 0
    with running_stack(ports, data_dir, env, seed=False) as stack:
        token, product_ids = seed(stack.gateway_url, args.products)
        script = write_script(data_dir, token, product_ids)
        url = f"{stack.gateway_url}/api/v1/orders"
        run_wrk(url, connections=8, duration=3, script=script)  # warm up pools and caches
        print(f"\ncheckout through the gateway, {args.products} product(s), PostgreSQL")
        for connections in args.connections:
            before = confirmed_orders(stack.gateway_url)
            result = run_wrk(url, connections=connections, duration=args.duration, script=script)
            confirmed = confirmed_orders(stack.gateway_url) - before
            per_second = confirmed / args.duration
            errors += result.errors
            print(line(f"{connections} connections", result, per_second))
            report["runs"].append(
                {
                    "connections": connections,
                    "confirmed_orders": confirmed,
                    "confirmed_per_second": round(per_second, 1),
                    "wrk": result.as_dict(),
                }
            )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"checkout-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"\nresults: {out}")
    return 1 if errors else 0


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=15, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, nargs="+", default=[32])
    parser.add_argument("--products", type=int, default=1, help="products the orders spread over")
    args = parser.parse_args()

    async with AsyncExitStack() as databases:
        urls = {
            spec.name: await databases.enter_async_context(postgres_database(f"bench_{spec.name}"))
            for spec in SERVICES
            if spec.migrations
        }
        with tempfile.TemporaryDirectory() as data_dir:
            return await asyncio.to_thread(run, args, urls, Path(data_dir))


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
