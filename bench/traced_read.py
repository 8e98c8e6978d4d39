"""What tracing costs the served product read: an untraced and a traced process of the
same service, side by side on one database, read at the same moment and sharing one core,
so that whatever the machine does meanwhile it does to both.

`bench/gateway.py --tracing off on --rounds N` starts a stack per mode and measures each
for its whole duration, minutes apart; on a machine whose speed wanders (one day the same
untraced read cost 55 to 87 us of CPU from one run to the next) the rounds differ by more
than the 5% tracing is allowed, and so did bursts at each process in turn, seconds apart
(each set's change spread from -10% to +12%). Here both processes of a pair are pinned to
the same CPU and each set is one burst: two wrk runs at once, one per process, with half
the connections each, on the other CPUs; each process's CPU per request is read from /proc
over the same seconds. A process also draws a small advantage of its own when it starts
(its memory layout, its hash seed: 1% between two untraced ones for a whole run), so the
sets run in rounds, every process started afresh for each, which one first and which wrk
first by turns. Two pairs are read: product_service's direct read (`direct`) and
the gateway's read of the same product answered from its response cache (`gateway`; both
gateways forward to the untraced product_service). `--control` runs the second process of
each pair untraced as well: the change it prints is the method's own error.

    make bench-tracing                                     # 10% kept, 4 rounds of 5 sets
    uv run python bench/traced_read.py --control           # both untraced: should be ~0
    uv run python bench/traced_read.py --sampler-arg 1.0 --targets direct --rounds 2

The change is judged by the CPU per request summed over all sets, with a 95% interval from
the sets resampled, and the sets' median and quartiles.

Target: tracing with 10% of traces kept costs each read <= 5%, judged by the summed change.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeAlias

sys.path.insert(0, str(Path(__file__).parent))

from cost import measured
from wrk import run_wrk

from devstack import (
    SERVICES,
    ServiceSpec,
    migrate_and_seed,
    stack_environment,
    start_process,
    wait_ready,
)
from eventbus.broker import Topology
from service_testing import OtlpReceiver, delete_topology, free_port, unique_topology

PRODUCT = next(spec for spec in SERVICES if spec.name == "product_service")
GATEWAY = next(spec for spec in SERVICES if spec.name == "api_gateway")
MODES = ("off", "on")
TARGET = 0.05
#: What each pair serves: product_service's read, and the gateway's read of the same
#: product answered from its response cache (its own work, no hop).
TARGETS = {"direct": PRODUCT, "gateway": GATEWAY}
#: Resamples of the sets for the interval of the summed change.
RESAMPLES = 2000

#: One set of a pair: per mode, the CPU per request (microseconds) and the requests served.
Set: TypeAlias = dict[str, tuple[float, int]]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sampler-arg", type=float, default=0.1, help="share of traces kept")
    parser.add_argument(
        "--rounds", type=int, default=4, help="each with every process started afresh"
    )
    parser.add_argument("--sets", type=int, default=5, help="bursts per pair and round")
    parser.add_argument("--burst", type=int, default=3, help="seconds per burst")
    parser.add_argument(
        "--connections", type=int, default=32, help="per burst, half to each process"
    )
    parser.add_argument(
        "--targets", nargs="+", choices=tuple(TARGETS), default=list(TARGETS), help="pairs"
    )
    parser.add_argument(
        "--control", action="store_true", help="the second process untraced too (A/A)"
    )
    args = parser.parse_args()
    if args.rounds * args.sets < 2:
        parser.error("--rounds times --sets must be 2 or more (the spread needs two)")
    if args.connections < 2:
        parser.error("--connections must be 2 or more (half go to each process)")

    topology = unique_topology("bench-traced-read")
    try:
        return 0 if measure(args, topology) else 1
    finally:
        asyncio.run(delete_topology(topology, (PRODUCT.name,)))


def measure(args: argparse.Namespace, topology: Topology) -> bool:
    """Runs the rounds and reports; whether every target was met."""
    with tempfile.TemporaryDirectory() as data_dir, OtlpReceiver(keep=False) as collector:
        extra = {
            "LOG_LEVEL": "WARNING",
            "RATE_LIMIT_PER_MINUTE": "0",
            "HEALTH_SERVICES": PRODUCT.name,
            "EVENTS_EXCHANGE": topology.exchange,
            "EVENTS_QUEUE_PREFIX": topology.queue_prefix,
        }
        migrate_and_seed(stack_environment({spec.name: 0 for spec in SERVICES}, Path(data_dir)))
        second = "untraced (control)" if args.control else f"{args.sampler_arg:.0%} of traces kept"
        print(
            f"untraced and {second}, side by side on one core: {', '.join(args.targets)}; "
            f"{args.rounds} rounds of {args.sets} sets of {args.burst} s bursts, "
            f"{args.connections} connections"
        )
        sets: dict[str, list[Set]] = {target: [] for target in args.targets}
        for number in range(args.rounds):
            ports = {(target, mode): free_port() for target in TARGETS for mode in MODES}
            env = stack_environment(
                # The gateways forward to the untraced product_service; nothing else runs.
                {spec.name: ports["direct", "off"] for spec in SERVICES},
                Path(data_dir),
                extra,
            )
            traced = {
                **env,
                "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
                "OTEL_TRACES_SAMPLER_ARG": str(args.sampler_arg),
            }
            envs = {"off": env, "on": env if args.control else traced}
            # Which of a pair starts first, by turns.
            order = MODES if number % 2 == 0 else MODES[::-1]
            processes: dict[tuple[str, str], subprocess.Popen[bytes]] = {}
            try:
                for target in ("direct", *args.targets):  # the gateways need the service
                    for mode in order:
                        if (target, mode) not in processes:
                            processes[target, mode] = started(
                                TARGETS[target], ports[target, mode], envs[mode]
                            )
                pin({key: process.pid for key, process in processes.items()})
                print(f" round {number + 1}")
                for target, found in run_sets(args, ports, processes).items():
                    sets[target] += found
                    print(f"  round {number + 1} {target:8} {summed_change(found):+6.1%}")
            finally:
                for process in processes.values():
                    process.terminate()
                for process in processes.values():
                    process.wait()
        return report(sets, collector)


def started(spec: ServiceSpec, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    process = start_process(spec, port, env)
    wait_ready(f"http://127.0.0.1:{port}", process=process)
    return process


def pin(pids: dict[tuple[str, str], int]) -> None:
    """Every served process on the last CPU, this script (and so wrk and the collector)
    on the others: the two processes of a pair then take turns on one core, and each
    meets whatever that core does in the same moments. (With one CPU, nothing to pin.)"""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return
    for pid in pids.values():
        os.sched_setaffinity(pid, {cpus[-1]})
    os.sched_setaffinity(0, set(cpus[:-1]))


def run_sets(
    args: argparse.Namespace,
    ports: dict[tuple[str, str], int],
    processes: dict[tuple[str, str], subprocess.Popen[bytes]],
) -> dict[str, list[Set]]:
    """Per pair, the sets: each a burst at both of its processes at once."""
    base = f"http://127.0.0.1:{ports['direct', 'off']}/v1/products"
    with urllib.request.urlopen(f"{base}?limit=1") as response:  # noqa: S310
        product_id = json.load(response)["items"][0]["id"]
    paths = {"direct": f"/v1/products/{product_id}", "gateway": f"/api/v1/products/{product_id}"}
    urls = {key: f"http://127.0.0.1:{ports[key]}{paths[key[0]]}" for key in processes}
    for url in urls.values():  # warm up caches and pools
        run_wrk(url, connections=8, duration=2)
    sets: dict[str, list[Set]] = {target: [] for target in args.targets}
    for number in range(args.sets):
        for target in args.targets:
            # The wrk of either process starts first, by turns.
            order = MODES if number % 2 == 0 else MODES[::-1]
            pair = {mode: (urls[target, mode], processes[target, mode].pid) for mode in order}
            per_mode = burst(pair, args.connections // 2, args.burst)
            sets[target].append(per_mode)
            off, on = (per_mode[mode][0] for mode in MODES)
            print(
                f"  set {number + 1:2} {target:8} CPU off {off:6.1f} us/request, on {on:6.1f}"
                f"  {on / off - 1:+6.1%}",
                flush=True,
            )
    return sets


def burst(pair: dict[str, tuple[str, int]], connections: int, duration: int) -> Set:
    """Both processes of a pair read at once, `connections` each: per mode, the CPU per
    request (microseconds) over its own wrk run and the requests served."""
    with ThreadPoolExecutor(len(pair)) as pool:
        runs = {
            mode: pool.submit(measured, url, {mode: pid}, connections, duration, threads=1)
            for mode, (url, pid) in pair.items()
        }
        done = {mode: run.result() for mode, run in runs.items()}
    per_mode: Set = {}
    for mode, (result, cpu_us) in done.items():
        if result.errors or not result.requests:
            url = pair[mode][0]
            raise SystemExit(f"{result.errors} errors, {result.requests} requests reading {url}")
        per_mode[mode] = (cpu_us[mode], result.requests)
    return per_mode


def summed(sets: list[Set]) -> dict[str, float]:
    """Each mode's CPU per request over all the sets (each set's weighted by its
    requests)."""
    return {
        mode: sum(cpu * requests for cpu, requests in (each[mode] for each in sets))
        / sum(each[mode][1] for each in sets)
        for mode in MODES
    }


def summed_change(sets: list[Set]) -> float:
    """Traced against untraced, by the CPU per request summed over the sets."""
    cpu = summed(sets)
    return cpu["on"] / cpu["off"] - 1


def interval(sets: list[Set]) -> tuple[float, float]:
    """The 95% interval of the summed change, from the sets resampled with replacement:
    where another run of as many sets on this machine would likely land."""
    draw = random.Random(0)
    changes = sorted(summed_change(draw.choices(sets, k=len(sets))) for _ in range(RESAMPLES))
    return changes[int(0.025 * RESAMPLES)], changes[int(0.975 * RESAMPLES) - 1]


def report(sets: dict[str, list[Set]], collector: OtlpReceiver) -> bool:
    """Per pair, the summed change with its interval, and the spread of the sets'
    changes; whether each summed change is within the target."""
    met = True
    for target, target_sets in sets.items():
        cpu = summed(target_sets)
        change = cpu["on"] / cpu["off"] - 1
        low, high = interval(target_sets)
        first, median, third = statistics.quantiles(
            [each["on"][0] / each["off"][0] - 1 for each in target_sets], n=4
        )
        met = met and change <= TARGET
        print(
            f"\n{target}: CPU per read, summed over the sets: off {cpu['off']:.1f} us, "
            f"on {cpu['on']:.1f} us: {change:+.1%} (95% interval {low:+.1%} to {high:+.1%};"
            f" target <= {TARGET:.0%})"
            f"\n  change by set: median {median:+.1%}, quartiles {first:+.1%} to {third:+.1%}"
        )
    print(f"\ncollector: {collector.batches} posts, {collector.bytes_received / 1e6:.1f} MB")
    return met


if __name__ == "__main__":
    raise SystemExit(main())
