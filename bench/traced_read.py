"""What tracing costs the served product read, with the machine's drift taken out: an
untraced and a traced product_service run side by side on one database, and wrk reads
from each in short bursts, alternated, so that both meet the machine in the same state.

`bench/gateway.py --tracing off on --rounds N` starts a stack per mode and measures each
for its whole duration, minutes apart; on a machine whose speed wanders (one day the same
untraced read cost 55 to 87 us of CPU from one run to the next) the rounds then differ by
more than the 5% tracing is allowed. Here each set reads both processes within seconds,
in turn first, and the change is judged by the CPU per request summed over all sets and by
the median of the sets' changes (with their quartiles, to show the spread that remains).
CPU is read from /proc for each process (the collector runs in this script's process,
outside both).

    uv run python bench/traced_read.py                     # 10% of traces kept, 20 sets
    uv run python bench/traced_read.py --sampler-arg 1.0 --sets 10 --burst 5

Target: tracing with 10% of traces kept costs the read <= 5%, judged by the summed change.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from cost import measured
from wrk import run_wrk

from devstack import (
    SERVICES,
    migrate_and_seed,
    stack_environment,
    start_process,
    wait_ready,
)
from eventbus.broker import Topology
from service_testing import OtlpReceiver, delete_topology, free_port, unique_topology

PRODUCT = next(spec for spec in SERVICES if spec.name == "product_service")
MODES = ("off", "on")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sampler-arg", type=float, default=0.1, help="share of traces kept")
    parser.add_argument("--sets", type=int, default=20, help="bursts per process")
    parser.add_argument("--burst", type=int, default=3, help="seconds per wrk burst")
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    if args.sets < 2:
        parser.error("--sets must be 2 or more (the spread needs two)")

    topology = unique_topology("bench-traced-read")
    try:
        measure(args, topology)
    finally:
        asyncio.run(delete_topology(topology, (PRODUCT.name,)))
    return 0


def measure(args: argparse.Namespace, topology: Topology) -> None:
    with tempfile.TemporaryDirectory() as data_dir, OtlpReceiver(keep=False) as collector:
        env = stack_environment(
            {spec.name: 1 for spec in SERVICES},  # only product_service is started
            Path(data_dir),
            {
                "LOG_LEVEL": "WARNING",
                "EVENTS_EXCHANGE": topology.exchange,
                "EVENTS_QUEUE_PREFIX": topology.queue_prefix,
            },
        )
        migrate_and_seed(env)
        traced_env = {
            **env,
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
            "OTEL_TRACES_SAMPLER_ARG": str(args.sampler_arg),
        }
        ports = {mode: free_port() for mode in MODES}
        processes = {
            "off": start_process(PRODUCT, ports["off"], env),
            "on": start_process(PRODUCT, ports["on"], traced_env),
        }
        try:
            per_set = run_sets(args, ports, processes)
        finally:
            for process in processes.values():
                process.terminate()
            for process in processes.values():
                process.wait()
        report(per_set, collector)


def run_sets(
    args: argparse.Namespace,
    ports: dict[str, int],
    processes: dict[str, subprocess.Popen[bytes]],
) -> list[dict[str, tuple[float, int]]]:
    """Each set: a burst at each process, the one first alternating; per mode, the CPU
    per request (microseconds) and the requests served."""
    for mode in MODES:
        wait_ready(f"http://127.0.0.1:{ports[mode]}", process=processes[mode])
    base = f"http://127.0.0.1:{ports['off']}/v1/products"
    with urllib.request.urlopen(f"{base}?limit=1") as response:  # noqa: S310
        product_id = json.load(response)["items"][0]["id"]
    urls = {mode: f"http://127.0.0.1:{ports[mode]}/v1/products/{product_id}" for mode in MODES}
    for url in urls.values():  # warm up caches and pools
        run_wrk(url, connections=8, duration=2)
    print(
        f"product_service untraced and traced ({args.sampler_arg:.0%} of traces kept) side by "
        f"side, {args.sets} sets of {args.burst} s bursts, {args.connections} connections"
    )
    sets = []
    for number in range(args.sets):
        per_mode: dict[str, tuple[float, int]] = {}
        for mode in MODES if number % 2 == 0 else MODES[::-1]:
            result, cpu_us = measured(
                urls[mode], {mode: processes[mode].pid}, args.connections, args.burst
            )
            if result.errors:
                raise SystemExit(f"{result.errors} errors reading {urls[mode]}")
            per_mode[mode] = (cpu_us[mode], result.requests)
        sets.append(per_mode)
        off, on = (per_mode[mode][0] for mode in MODES)
        print(
            f"  set {number + 1:2}: CPU off {off:6.1f} us/request, on {on:6.1f}"
            f"  {on / off - 1:+6.1%}",
            flush=True,
        )
    return sets


def report(sets: list[dict[str, tuple[float, int]]], collector: OtlpReceiver) -> None:
    """Per mode the CPU per request over all sets (each set's weighted by its requests),
    and the spread of the sets' changes."""
    totals = {
        mode: sum(cpu * requests for cpu, requests in (each[mode] for each in sets))
        / sum(each[mode][1] for each in sets)
        for mode in MODES
    }
    changes = [each["on"][0] / each["off"][0] - 1 for each in sets]
    low, median, high = statistics.quantiles(changes, n=4)
    print(
        f"\nCPU per read, summed over the sets: off {totals['off']:.1f} us, "
        f"on {totals['on']:.1f} us: {totals['on'] / totals['off'] - 1:+.1%}"
        f"\nchange by set: median {median:+.1%}, quartiles {low:+.1%} to {high:+.1%}"
        f"\ncollector: {collector.batches} posts, {collector.bytes_received / 1e6:.1f} MB"
    )


if __name__ == "__main__":
    raise SystemExit(main())
