"""A catalog that scales: the public list at 100,000 products against 20, on PostgreSQL.

    make bench-catalog
    uv run python bench/catalog.py --duration 10 --connections 8 32 64

One product_service process on a fresh PostgreSQL database, asked directly (as the
gateway would) for the first page, a search, a filtered search and a deep page (by
cursor, 90,000 rows in), with wrk: first with 20 products, then with 100,000. Prints the
req/s and p99 of each next to each other and their ratio, and whether each target is met.

Targets (8 connections): at 100,000 products each request keeps >= 0.5x its 20-product
throughput and a p99 <= 50 ms; "keybord" finds keyboards and a product named exactly
"Keyboard", the oldest of 3,334, comes first for "keyboard".
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).parent))

from wrk import WrkResult, run_wrk

from devstack import REPO_ROOT, SERVICES, start_process, wait_ready
from service_testing import delete_topology, free_port, postgres_database, unique_topology
from shared.migrations import upgrade

RESULTS = Path(__file__).parent / "results"
SMALL, LARGE = 20, 100_000
DEEP = 90_000
RATIO_TARGET, P99_TARGET_MS = 0.5, 50.0
#: The targets hold at this many connections; the others are shown for the trend.
TARGET_CONNECTIONS = 8

# Names of three words (adjective, material, noun): 600 distinct names; one product in
# 30 is a keyboard, spread over the five categories.
_SEED = """
INSERT INTO product (id, sku, name, description, price, currency, category, is_active,
                     created_at, updated_at)
SELECT gen_random_uuid(), 'BENCH-' || g, initcap(adjective || ' ' || material || ' ' || noun),
       'A ' || adjective || ' ' || noun || ' made of ' || material || '. Built to last.',
       1 + (g * 37 % 500), 'USD', category, true,
       now() - g * interval '1 second', now()
FROM generate_series($1::int, $2::int) AS g,
     LATERAL (SELECT
        (ARRAY['red','blue','green','black','white','silver','compact','wireless','ergonomic',
               'classic','premium','portable','heavy','light','smart','vintage','modern',
               'quiet','rugged','slim'])[1 + g % 20] AS adjective,
        (ARRAY['steel','wooden','leather','cotton','glass','bamboo','carbon','ceramic',
               'plastic','wool'])[1 + g / 20 % 10] AS material,
        (ARRAY['lamp','keyboard','mouse','monitor','chair','desk','mug','kettle','jacket',
               'backpack','speaker','headphones','notebook','pen','blanket','pillow','bottle',
               'watch','camera','charger','cable','router','tent','stove','knife','pan',
               'shelf','clock','fan','heater'])[1 + g % 30] AS noun,
        (ARRAY['electronics','home','outdoors','office','kitchen'])[1 + g / 30 % 5] AS category
     ) AS words
"""

REQUESTS = {
    "first page": "/v1/products",
    "search": "/v1/products?q=keyboard",
    "filtered search": "/v1/products?q=keyboard&category=home&max_price=300",
    "deep page (cursor)": None,  # made per catalog: the cursor of its deep page
}


def _asyncpg_url(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://").split("?")[0]


async def seed(database_url: str, first: int, last: int) -> None:
    connection = await asyncpg.connect(_asyncpg_url(database_url))
    try:
        await connection.execute(_SEED, first, last)
        await connection.execute("VACUUM ANALYZE product")
    finally:
        await connection.close()


def get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - our own server
        document: dict[str, Any] = json.load(response)
        return document


def deep_cursor(base_url: str, rows: int) -> str:
    """The cursor of the page that starts `rows` in (one slow offset walk to find it)."""
    limit = min(20, rows)
    page = get_json(f"{base_url}/v1/products?limit={limit}&offset={rows - limit}")
    cursor: str = page["next_cursor"]
    return cursor


# The oldest product of the large catalog, named exactly like the searched word: among
# 3,334 keyboards, newer and all as relevant by their words, it must come first.
_EXACT_NAME = """
INSERT INTO product (id, sku, name, description, price, currency, category, is_active,
                     created_at, updated_at)
VALUES (gen_random_uuid(), 'BENCH-EXACT', 'Keyboard', 'A keyboard.', 30, 'USD', 'office',
        true, now() - interval '30 days', now())
"""


async def add_exact_name_product(database_url: str) -> None:
    connection = await asyncpg.connect(_asyncpg_url(database_url))
    try:
        await connection.execute(_EXACT_NAME)
    finally:
        await connection.close()


def check_relevance(base_url: str) -> bool:
    """At 100,000 products: a misspelt word still finds its products, and an exact name
    comes first. Prints what it found."""
    typo = get_json(f"{base_url}/v1/products?q=keybord")
    names = [item["name"] for item in typo["items"]]
    typo_met = bool(names) and all("Keyboard" in name for name in names)
    print(f"q=keybord: {typo['total']:,} found, first {names[:2]}: {_verdict(typo_met)}")
    exact = get_json(f"{base_url}/v1/products?q=keyboard")
    first = [item["name"] for item in exact["items"][:2]]
    exact_met = first[:1] == ["Keyboard"]
    print(f"q=keyboard: {exact['total']:,} found, first {first}: {_verdict(exact_met)}")
    return typo_met and exact_met


@dataclass(frozen=True)
class Measured:
    """wrk's figures and the CPU each request cost the service and PostgreSQL: on a
    machine that other work shares, req/s and p99 move with the neighbours, CPU time per
    request much less."""

    wrk: WrkResult
    service_cpu_ms: float
    database_cpu_ms: float


def _cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _backends(database: str) -> list[int]:
    """The PostgreSQL processes serving clients of `database`: their titles read
    "postgres: [<cluster>:] <user> <database> <host>(<port>) <state>" (autovacuum
    workers, which come and go, are left out)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            title = cmdline.read_bytes().split(b"\0")[0].split()
        except OSError:
            continue
        if title[:1] == [b"postgres:"] and database.encode() in title[2:4]:
            found.append(int(cmdline.parent.name))
    return found


def measure_one(url: str, connections: int, duration: int, service: int, database: str) -> Measured:
    before = {pid: _cpu_seconds(pid) for pid in [service, *_backends(database)]}
    result = run_wrk(url, connections=connections, duration=duration)
    # Backends the pool opened during the run count from zero; one it closed meanwhile
    # took its CPU time along (left out: the figure can only be low by it).
    after = {pid: _cpu_seconds(pid) for pid in {*before, *_backends(database)}}
    spent = {pid: after[pid] - before.get(pid, 0.0) for pid in after if after[pid] > 0}
    requests = max(result.requests, 1)
    service_ms = spent.pop(service) / requests * 1000
    return Measured(result, service_ms, sum(spent.values()) / requests * 1000)


def measure(
    base_url: str, depth: int, args: argparse.Namespace, service: int, database: str
) -> dict[tuple[str, int], Measured]:
    paths = dict(REQUESTS)
    paths["deep page (cursor)"] = "/v1/products?" + urllib.parse.urlencode(
        {"cursor": deep_cursor(base_url, depth)}
    )
    for path in paths.values():
        run_wrk(f"{base_url}{path}", connections=8, duration=1)  # warm caches and pools
    return {
        (name, connections): measure_one(
            f"{base_url}{path}", connections, args.duration, service, database
        )
        for name, path in paths.items()
        for connections in args.connections
    }


def _verdict(met: bool) -> str:
    return "met" if met else "MISSED"


def report(
    small: dict[tuple[str, int], Measured], large: dict[tuple[str, int], Measured]
) -> tuple[bool, list[dict[str, Any]]]:
    """Print each request's figures side by side and, at 8 connections, whether each
    target is met; True when all of them are."""
    print(
        f"\n{'request':<20} {'conns':>5} {'req/s 20':>9} {'req/s 100k':>10} {'ratio':>6}"
        f" {'p99 20':>8} {'p99 100k':>9} {'errors':>6}  {f'ratio >= {RATIO_TARGET}':<13}"
        f" {f'p99 <= {P99_TARGET_MS:.0f} ms':<13}"
    )
    ok, rows = True, []
    for (name, connections), small_run in small.items():
        few, many = small_run.wrk, large[name, connections].wrk
        ratio = many.requests_per_second / few.requests_per_second
        errors = few.errors + many.errors
        ratio_met = ratio >= RATIO_TARGET and not errors
        p99_met = many.p99_ms <= P99_TARGET_MS
        targets = ""
        if connections == TARGET_CONNECTIONS:
            ok = ok and ratio_met and p99_met
            targets = f"  {_verdict(ratio_met):<13} {_verdict(p99_met):<13}"
        print(
            f"{name:<20} {connections:>5} {few.requests_per_second:>9.0f}"
            f" {many.requests_per_second:>10.0f} {ratio:>6.2f} {few.p99_ms:>6.1f}ms"
            f" {many.p99_ms:>7.1f}ms {errors:>6}{targets}"
        )
        rows.append(
            {
                "request": name,
                "connections": connections,
                "small": {**few.as_dict(), **_cpu(small_run)},
                "large": {**many.as_dict(), **_cpu(large[name, connections])},
                "ratio": round(ratio, 3),
                "targets_met": {"ratio": ratio_met, "p99": p99_met}
                if connections == TARGET_CONNECTIONS
                else None,
            }
        )
    _report_cpu(small, large)
    return ok, rows


def _cpu(run: Measured) -> dict[str, float]:
    return {
        "service_cpu_ms": round(run.service_cpu_ms, 2),
        "database_cpu_ms": round(run.database_cpu_ms, 2),
    }


def _report_cpu(
    small: dict[tuple[str, int], Measured], large: dict[tuple[str, int], Measured]
) -> None:
    print(
        f"\nCPU per request at {TARGET_CONNECTIONS} connections (ms):"
        f"\n{'request':<20} {'service 20':>10} {'100k':>6} {'PostgreSQL 20':>14} {'100k':>6}"
    )
    for (name, connections), few in small.items():
        if connections == TARGET_CONNECTIONS:
            many = large[name, connections]
            print(
                f"{name:<20} {few.service_cpu_ms:>10.2f} {many.service_cpu_ms:>6.2f}"
                f" {few.database_cpu_ms:>14.2f} {many.database_cpu_ms:>6.2f}"
            )


async def run(args: argparse.Namespace) -> int:
    spec = next(spec for spec in SERVICES if spec.name == "product_service")
    topology = unique_topology("bench-catalog")
    async with postgres_database("bench_catalog") as database_url:
        await asyncio.to_thread(upgrade, REPO_ROOT / spec.migrations, database_url)  # type: ignore[operator]
        port = free_port()
        with tempfile.TemporaryDirectory() as data_dir:
            env = {
                **os.environ,
                "DATA_DIR": data_dir,
                "DATABASE_URL": database_url,
                "LOG_LEVEL": "WARNING",
                "PRODUCT_CACHE_SECONDS": "0",
                "EVENTS_EXCHANGE": topology.exchange,
                "EVENTS_QUEUE_PREFIX": topology.queue_prefix,
            }
            process = start_process(spec, port, env)
            try:
                base_url = f"http://127.0.0.1:{port}"
                wait_ready(base_url)
                await seed(database_url, 1, SMALL)
                print(f"{SMALL} products: measuring ...", flush=True)
                database = urllib.parse.urlsplit(database_url).path.lstrip("/")
                small = measure(base_url, 10, args, process.pid, database)
                started = time.monotonic()
                await seed(database_url, SMALL + 1, LARGE - 1)
                await add_exact_name_product(database_url)
                print(f"{LARGE:,} products (seeded in {time.monotonic() - started:.0f} s): ...")
                large = measure(base_url, DEEP, args, process.pid, database)
                relevant = check_relevance(base_url)
            finally:
                process.terminate()
                process.wait()
    await delete_topology(topology, (spec.name,))
    ok, rows = report(small, large)
    ok = ok and relevant
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"catalog-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"runs": rows}, indent=2))
    verdict = "every target met" if ok else "TARGETS MISSED"
    print(
        f"\nresults: {out}\n{verdict} (at {TARGET_CONNECTIONS} connections: >= {RATIO_TARGET}x"
        f" the 20-product req/s without errors, p99 <= {P99_TARGET_MS:.0f} ms at 100,000)"
    )
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, nargs="+", default=[8, 32])
    return asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    raise SystemExit(main())
