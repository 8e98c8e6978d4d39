"""What a kept trace costs the process that serves it, measured without the network.

`bench/gateway.py` judges tracing by wrk's rate and the process's CPU per request, whose
runs differ by 8% and more on a loaded machine: as much as the whole 10%-sampled cost.
This drives product_service's app in-process instead (its cached GET /v1/products/{id},
every middleware, no socket), one request per turn of the event loop, each in a task of
its own as uvicorn runs it, and reads the CPU of the whole process (the exporter's thread
included, the collector left outside in this script's own process).

For each share of traces kept it prints the CPU per request, its change from tracing off
in the same round, and what that makes per kept trace: (traced - off) / share. Without
uvicorn and the sockets a request costs about half what it does over HTTP, so the
percentages here are not the served figures, and neither quite are the microseconds per
kept trace: served, a kept trace costs more still (about 28 us against 20-23 here on
1952502). Requests awaited one after another in one task, as this driver ran them before,
put a kept trace at 11-13 us: the cost of a kept trace depends on how much other code
runs between two of them, so the closer the driver is to a server, the truer the figure.

    uv run python bench/kept_trace.py --shares 0.1 1.0 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from starlette.types import Message
from tracing import spread

from devstack import SERVICES, migrate_and_seed, service_env, stack_environment
from eventbus.broker import Topology
from service_testing import OtlpReceiver, delete_topology, unique_topology

PRODUCT = next(spec for spec in SERVICES if spec.name == "product_service")
#: Per tracing mode (None: off), per round: CPU per request of the process and of its
#: main thread, in microseconds.
Results = dict[float | None, list[tuple[float, float]]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shares", type=float, nargs="+", default=[0.1, 1.0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--serve", help=argparse.SUPPRESS)  # internal: one measured run
    args = parser.parse_args()
    if args.serve is not None:
        asyncio.run(serve(json.loads(args.serve)))
        return
    topology = unique_topology("bench-kept-trace")
    try:
        results, collector = run_rounds(args, topology)
    finally:
        asyncio.run(delete_topology(topology, (PRODUCT.name,)))
    report(results, args.shares, collector)


def run_rounds(args: argparse.Namespace, topology: Topology) -> tuple[Results, OtlpReceiver]:
    """Tracing off and at each share, alternated `args.rounds` times."""
    with tempfile.TemporaryDirectory() as data_dir, OtlpReceiver(keep=False) as collector:
        env = stack_environment(
            {spec.name: 1 for spec in SERVICES},  # no process is started: no port used
            Path(data_dir),
            {
                "LOG_LEVEL": "WARNING",
                "EVENTS_EXCHANGE": topology.exchange,
                "EVENTS_QUEUE_PREFIX": topology.queue_prefix,
            },
        )
        migrate_and_seed(env)
        env = service_env(PRODUCT, env)
        modes: list[float | None] = [None, *args.shares]
        results: Results = {mode: [] for mode in modes}
        for round_ in range(args.rounds):
            for share in modes:
                run_env = dict(env)
                if share is not None:
                    run_env["OTEL_EXPORTER_OTLP_ENDPOINT"] = collector.endpoint
                    run_env["OTEL_TRACES_SAMPLER_ARG"] = str(share)
                results[share].append(measure(args.requests, run_env))
            print(
                f"round {round_ + 1}: "
                + ", ".join(f"{label(m)} {results[m][-1][0]:.2f} us" for m in modes),
                flush=True,
            )
    return results, collector


def label(share: float | None) -> str:
    return "off" if share is None else f"{share:.0%} kept"


def measure(requests: int, env: dict[str, str]) -> tuple[float, float]:
    """One run in a process of its own (`serve`): CPU per request of the process and of
    its main thread, in microseconds."""
    run = subprocess.run(
        [sys.executable, __file__, "--serve", json.dumps({"requests": requests})],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if run.returncode != 0:
        raise SystemExit(f"a measured run failed:\n{run.stderr[-3000:]}")
    process, main_thread = run.stdout.strip().splitlines()[-1].split()
    return float(process), float(main_thread)


def report(results: Results, shares: list[float], collector: OtlpReceiver) -> None:
    off = results[None]
    print(f"\nCPU per cached product read, in-process (median of {len(off)} rounds)")
    print(f"  tracing off      {statistics.median(p for p, _ in off):7.2f} us")
    for share in shares:
        traced = results[share]
        changes = [t / o - 1 for (t, _), (o, _) in zip(traced, off, strict=True)]
        line = (
            f"  {label(share):16} {statistics.median(p for p, _ in traced):7.2f} us"
            f"  {spread(changes)}"
        )
        if share > 0:
            per_kept = [(t - o) / share for (t, _), (o, _) in zip(traced, off, strict=True)]
            on_main = [(t - o) / share for (_, t), (_, o) in zip(traced, off, strict=True)]
            line += (
                f"   per kept trace {statistics.median(per_kept):5.1f} us"
                f" ({min(per_kept):.1f} to {max(per_kept):.1f}),"
                f" of which the event loop's thread {statistics.median(on_main):5.1f}"
            )
        print(line)
    print(f"  collector: {collector.batches} batches, {collector.bytes_received / 1e6:.1f} MB")


async def serve(job: dict[str, Any]) -> None:
    """One run, in a process of its own: the app's lifespan, a warm-up, then `requests`
    reads; prints the CPU per request in microseconds of the process and of its main
    thread (the event loop's; the rest is the span exporter's thread)."""
    from opentelemetry import trace

    from product_service.main import create_app

    app = create_app()
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1"), (b"user-agent", b"bench"), (b"accept", b"*/*")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    statuses: list[int] = []
    body = bytearray()

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))

    async def read(count: int) -> None:
        for _ in range(count):
            # Awaiting the task turns the loop, which lets other threads (the span
            # exporter's) take the interpreter, as a server's loop waiting for sockets does.
            await asyncio.create_task(app(dict(scope), receive, send))

    async with app.router.lifespan_context(app):
        scope.update(path="/v1/products", raw_path=b"/v1/products", query_string=b"limit=1")
        await app(dict(scope), receive, send)
        path = f"/v1/products/{json.loads(body)['items'][0]['id']}"
        scope.update(path=path, raw_path=path.encode(), query_string=b"")
        await read(3000)
        started, started_main = time.process_time(), time.thread_time()
        await read(job["requests"])
        flush = getattr(trace.get_tracer_provider(), "force_flush", None)
        if flush is not None:
            flush()  # the spans of the run exported within it
        spent, spent_main = time.process_time() - started, time.thread_time() - started_main
    if set(statuses) != {200}:
        raise SystemExit(f"unexpected statuses {sorted(set(statuses))}")
    print(f"{spent / job['requests'] * 1e6:.3f} {spent_main / job['requests'] * 1e6:.3f}")


if __name__ == "__main__":
    main()
