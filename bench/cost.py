"""What a benchmark run cost the machine: CPU seconds per process group read from /proc,
counts from the services' own /metrics (HTTP calls, SQL statements and commits, events),
and py-spy profiles summed over every service.

CPU is summed over every process the system is made of: each service and the gateway,
the PostgreSQL backends serving this run's databases (found by the database name in
their process title) and the RabbitMQ node. The broker and PostgreSQL's background
writers are shared with whatever else runs on the machine, so the broker's figure is an
upper bound on a busy machine; PostgreSQL's WAL writer and checkpointer are left out.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from wrk import WrkResult, run_wrk

_TICKS = os.sysconf("SC_CLK_TCK")
POSTGRESQL = "postgresql"
RABBITMQ = "rabbitmq"


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of one process so far, or None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces; fields after it are fixed.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def database_backends(databases: Iterable[str]) -> list[int]:
    """PostgreSQL backends serving any of `databases` (their title names the database)."""
    names = tuple(f" {name} " for name in databases)
    pids = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            title = _cmdline(int(entry.name))
            if title.startswith("postgres: ") and any(name in title for name in names):
                pids.append(int(entry.name))
    return pids


def broker_processes() -> list[int]:
    return [
        int(entry.name)
        for entry in os.scandir("/proc")
        if entry.name.isdigit() and "beam.smp" in _cmdline(int(entry.name)).split(" ", 1)[0]
    ]


class CpuMeter:
    """CPU used between `start()` and `stop()` by each group of processes, sampled every
    `interval` seconds so that short-lived processes (pooled connections that close)
    are counted up to their last sample."""

    def __init__(
        self,
        services: Mapping[str, int],
        databases: Iterable[str] = (),
        *,
        interval: float = 0.2,
    ) -> None:
        self.services = dict(services)
        self.databases = tuple(databases)
        self.interval = interval
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self._group: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _groups(self) -> Iterable[tuple[str, int]]:
        for name, pid in self.services.items():
            yield name, pid
        if self.databases:
            for pid in database_backends(self.databases):
                yield POSTGRESQL, pid
        for pid in broker_processes():
            yield RABBITMQ, pid

    def _sample(self, *, starting: bool = False) -> None:
        for group, pid in self._groups():
            seconds = cpu_seconds(pid)
            if seconds is None:
                continue
            if pid not in self._first:
                # Born during the window: everything it used counts.
                self._first[pid] = seconds if starting else 0.0
                self._group[pid] = group
            self._last[pid] = seconds

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def start(self) -> None:
        self._sample(starting=True)
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        used: dict[str, float] = defaultdict(float)
        for pid, first in self._first.items():
            used[self._group[pid]] += self._last[pid] - first
        return dict(used)


Sample = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Sample:
    """Every counter of a /metrics page, and every histogram's sum and count, keyed by
    name and labels."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:  # noqa: S310
        text = response.read().decode()
    samples: Sample = {}
    for family in text_string_to_metric_families(text):
        if family.type not in ("counter", "histogram"):
            continue
        for sample in family.samples:
            if sample.name.endswith(("_total", "_sum", "_count")):
                samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def difference(after: Sample, before: Sample) -> Sample:
    return {key: value - before.get(key, 0.0) for key, value in after.items()}


def total(sample: Sample, name: str, **labels: str) -> float:
    """The sum of `name`'s series whose labels include `labels`."""
    return sum(
        value
        for (metric, series), value in sample.items()
        if metric == name and all(dict(series).get(k) == v for k, v in labels.items())
    )


@dataclass
class PerOrder:
    """Counts and CPU per confirmed order, by where they were spent."""

    orders: int
    cpu_ms: dict[str, float] = field(default_factory=dict)
    counts: dict[str, float] = field(default_factory=dict)
    #: Per service: HTTP requests served, SQL statements, commits (per order).
    by_service: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    #: The CPU per order less what the system uses idle over the same time.
    busy_cpu_ms: float = float("nan")
    #: What each process group uses with no orders, in ms of CPU per second.
    idle_ms_per_second: dict[str, float] = field(default_factory=dict)
    #: Mean ms of each route served about once per order or more, by service and route.
    route_ms: dict[str, float] = field(default_factory=dict)
    #: Mean ms of each step of order_service's checkout.
    step_ms: dict[str, float] = field(default_factory=dict)

    @property
    def total_cpu_ms(self) -> float:
        return sum(self.cpu_ms.values())

    def lines(self) -> list[str]:
        cpu = ", ".join(f"{name} {ms:.1f}" for name, ms in self.cpu_ms.items())
        counts = ", ".join(f"{name} {value:.2f}" for name, value in self.counts.items())
        services = "; ".join(
            f"{name} {http:.1f}/{sql:.1f}/{commits:.1f}"
            for name, (http, sql, commits) in self.by_service.items()
            if http or sql
        )
        lines = [
            f"  CPU per confirmed order: {self.total_cpu_ms:.1f} ms, "
            f"{self.busy_cpu_ms:.1f} ms above idle   ({cpu})",
            f"  per confirmed order: {counts}",
            f"  HTTP requests/SQL statements/commits per order by service: {services}",
        ]
        if self.route_ms:
            slowest = sorted(self.route_ms.items(), key=lambda item: -item[1])
            routes = "; ".join(f"{name} {ms:.1f}" for name, ms in slowest)
            steps = ", ".join(f"{name} {ms:.1f}" for name, ms in self.step_ms.items())
            lines.append(f"  mean ms per request served: {routes}")
            lines.append(f"  mean ms per checkout step: {steps}")
        if self.idle_ms_per_second:
            idle = sorted(self.idle_ms_per_second.items(), key=lambda item: -item[1])
            parts = ", ".join(f"{name} {ms:.0f}" for name, ms in idle)
            lines.append(f"  idle, ms of CPU per second: {parts}")
        return lines


def per_order(
    orders: int,
    cpu: Mapping[str, float],
    metrics: Mapping[str, Sample],
) -> PerOrder:
    """CPU (ms) and counts per order from a window's CPU and metric deltas."""
    n = max(orders, 1)
    result = PerOrder(orders)
    for name, seconds in sorted(cpu.items(), key=lambda item: -item[1]):
        result.cpu_ms[name] = seconds * 1000 / n
    for name, sample in metrics.items():
        result.by_service[name] = (
            total(sample, "http_requests_total") / n,
            total(sample, "db_statements_total") / n,
            total(sample, "db_transactions_total", outcome="commit") / n,
        )
    http = sum(total(sample, "http_requests_total") for sample in metrics.values())
    result.counts["HTTP requests served"] = http / n
    result.counts["SQL statements"] = (
        sum(total(sample, "db_statements_total") for sample in metrics.values()) / n
    )
    result.counts["commits"] = (
        sum(total(sample, "db_transactions_total", outcome="commit") for sample in metrics.values())
        / n
    )
    result.counts["events published"] = (
        sum(total(sample, "events_published_total") for sample in metrics.values()) / n
    )
    result.counts["events consumed"] = (
        sum(total(sample, "events_consumed_total") for sample in metrics.values()) / n
    )
    for name, sample in metrics.items():
        for labels, ms in means(sample, "http_request_duration_seconds", n):
            result.route_ms[f"{name} {labels['method']} {labels['route']}"] = ms
        for labels, ms in means(sample, "checkout_step_duration_seconds", n):
            result.step_ms[labels["step"]] = ms
    return result


def means(sample: Sample, histogram: str, orders: int) -> list[tuple[dict[str, str], float]]:
    """The mean of `histogram` in ms for each series observed at least once per two
    orders (the checkout's own work, not health checks or scrapes), with its labels."""
    found = []
    for (metric, series), seconds in sample.items():
        count = sample.get((f"{histogram}_count", series), 0.0)
        if metric == f"{histogram}_sum" and count >= orders / 2:
            found.append((dict(series), seconds * 1000 / count))
    return found


class Profiler:
    """py-spy `record` on each process for `seconds`, written as collapsed stacks."""

    def __init__(self, directory: Path, pids: Mapping[str, int], seconds: int) -> None:
        self.directory = directory
        self.pids = dict(pids)
        self.seconds = seconds
        self._running: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for name, pid in self.pids.items():
            # Installed beside this interpreter (a dev dependency), maybe not on PATH.
            args = [
                str(Path(sys.executable).with_name("py-spy")),
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(self.seconds),
            ]
            args += ["--rate", "50", "--format", "raw", "--nonblocking", "--full-filenames"]
            args += ["--output", str(self.directory / f"{name}.txt")]
            self._running.append(
                subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )

    def wait(self) -> None:
        for process in self._running:
            process.wait()


_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _area(file: str) -> str:
    """The library or our own package a frame belongs to."""
    parts = Path(file).parts
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1].removesuffix(".py")
    for index, part in enumerate(parts):
        if part == "src" and index + 1 < len(parts):
            return parts[index + 1]
    return (
        parts[0].removesuffix(".py")
        if len(parts) == 1
        else "stdlib:" + parts[-1].removesuffix(".py")
    )


def summarise(directory: Path, top: int = 5) -> list[str]:
    """The costliest functions (self time) and libraries across every profile."""
    functions: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    samples = 0
    for path in sorted(directory.glob("*.txt")):
        for raw in path.read_text().splitlines():
            stack, _, count = raw.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            leaf = stack.rsplit(";", 1)[-1]
            match = _FRAME.match(leaf)
            file = match.group("file") if match else leaf
            function = match.group("function") if match else leaf
            functions[f"{function} ({file})"] += int(count)
            areas[_area(file)] += int(count)
            samples += int(count)
    if not samples:
        return ["  (no samples: is py-spy allowed to attach here?)"]
    lines = [f"  top {top} libraries by CPU samples (self time, every process):"]
    lines += [f"    {n / samples:6.1%}  {name}" for name, n in areas.most_common(top)]
    lines.append(f"  top {top} functions:")
    lines += [f"    {n / samples:6.1%}  {name}" for name, n in functions.most_common(top)]
    return lines


def measured(
    url: str,
    pids: dict[str, int],
    connections: int,
    duration: int,
    profile: Path | None = None,
    headers: dict[str, str] | None = None,
    threads: int = 2,
) -> tuple[WrkResult, dict[str, float]]:
    """A wrk run and the CPU (microseconds) each of the `pids` spent per request
    meanwhile; with `profile`, py-spy records each of them into that folder and the top
    costs are printed."""
    profiler = None if profile is None else Profiler(profile, pids, duration)
    before = [cpu_seconds(pid) or 0.0 for pid in pids.values()]
    if profiler is not None:
        profiler.start()
    result = run_wrk(
        url, connections=connections, duration=duration, threads=threads, headers=headers
    )
    used = {
        name: ((cpu_seconds(pid) or 0.0) - start) * 1e6 / max(result.requests, 1)
        for (name, pid), start in zip(pids.items(), before, strict=True)
    }
    if profiler is not None and profile is not None:
        profiler.wait()
        print(f"  py-spy profiles in {profile} (the profiler's own cost is in these figures)")
        print("\n".join(summarise(profile, top=8)))
    return result, used
