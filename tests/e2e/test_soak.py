"""Soak: the Locust shoppers of `load/locustfile.py` against the replicated system while
the broker restarts and order_service is restarted twice (gracefully, then killed with
SIGKILL), each process of it in turn; then the locustfile's invariants: no order stuck
`pending`, no oversell, stock neither created nor lost and none left reserved, every
confirmed order notified.

`make soak` runs it for ten minutes (`SOAK_SECONDS=600`); the suite runs a minute of it.
"""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from devstack import REPO_ROOT

if TYPE_CHECKING:
    from devstack.replicas import ReplicatedStack
    from service_testing import RabbitMQNode

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.rabbitmq]

SOAK_SECONDS = int(os.environ.get("SOAK_SECONDS", "60"))
#: Simulated shoppers: each waits 0.5-2 s between actions.
SOAK_USERS = int(os.environ.get("SOAK_USERS", "10" if SOAK_SECONDS <= 120 else "20"))
#: Requests that may fail while processes die and restart (a killed process takes the
#: requests it was serving with it; nothing else may fail).
MAX_FAILURE_SHARE = 0.02


@dataclass
class Disruption:
    at: float  # share of the run after which it starts
    what: str
    act: Callable[[], None]
    took: float | None = None


def disrupt(plan: list[Disruption], started: float, duration: float) -> None:
    """Each disruption at its time, one after the other (a slow one delays the next)."""
    for step in plan:
        time.sleep(max(0.0, started + step.at * duration - time.monotonic()))
        began = time.monotonic()
        step.act()
        step.took = time.monotonic() - began


def broker_restart(node: RabbitMQNode) -> Callable[[], None]:
    def act() -> None:
        node.stop_app()
        time.sleep(3)  # down long enough for every relay and consumer to notice
        node.start_app()

    return act


def rolling_restart(stack: ReplicatedStack, name: str, sig: signal.Signals) -> Callable[[], None]:
    return lambda: stack.restart(name, sig)


def aggregated(stats_csv: Path) -> dict[str, str]:
    with stats_csv.open() as file:
        for row in csv.DictReader(file):
            if row["Name"] == "Aggregated":
                return row
    raise AssertionError(f"no aggregated row in {stats_csv}")


def failures(failures_csv: Path) -> list[dict[str, str]]:
    with failures_csv.open() as file:
        return list(csv.DictReader(file))


def test_mixed_traffic_through_restarts_loses_nothing(
    replica_stack: ReplicatedStack, rabbitmq_node: RabbitMQNode, tmp_path: Path
) -> None:
    plan = [
        Disruption(0.15, "broker restarted", broker_restart(rabbitmq_node)),
        Disruption(
            0.35,
            "order_service restarted (SIGTERM)",
            rolling_restart(replica_stack, "order_service", signal.SIGTERM),
        ),
        Disruption(
            0.6,
            "order_service restarted (SIGKILL)",
            rolling_restart(replica_stack, "order_service", signal.SIGKILL),
        ),
    ]
    env = {
        **os.environ,
        "ADMIN_EMAIL": replica_stack.env["ADMIN_EMAIL"],
        "ADMIN_PASSWORD": replica_stack.env["ADMIN_PASSWORD"],
        # An order abandoned by the killed process waits for the sweep (TTL + grace).
        "LOAD_SETTLE_SECONDS": "90",
    }
    prefix = tmp_path / "soak"
    locust = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(REPO_ROOT / "load" / "locustfile.py"),
            "--headless",
            "--users",
            str(SOAK_USERS),
            "--spawn-rate",
            "5",
            "--run-time",
            f"{SOAK_SECONDS}s",
            "--host",
            replica_stack.gateway_url,
            "--only-summary",
            "--stop-timeout",
            "10",
            # Failures are judged below; the exit code then says only whether an
            # invariant broke.
            "--exit-code-on-error",
            "0",
            "--csv",
            str(prefix),
        ],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    disruptions = threading.Thread(
        target=disrupt, args=(plan, time.monotonic(), SOAK_SECONDS), daemon=True
    )
    disruptions.start()
    output, _ = locust.communicate(timeout=SOAK_SECONDS + 600)
    disruptions.join(timeout=300)
    report = output.decode(errors="replace")

    assert not disruptions.is_alive(), "a restart did not finish"
    assert all(step.took is not None for step in plan), [step.what for step in plan]
    assert locust.returncode == 0, report[-4000:]
    assert "Invariants over" in report, report[-4000:]
    totals = aggregated(Path(f"{prefix}_stats.csv"))
    requests, failed = int(totals["Request Count"]), int(totals["Failure Count"])
    print(
        f"\nsoak: {SOAK_SECONDS} s, {SOAK_USERS} shoppers, {requests} requests "
        f"({float(totals['Requests/s']):.1f}/s), {failed} failed; "
        + "; ".join(f"{step.what} in {step.took:.1f} s" for step in plan)
        + "\n"
        + report[report.index("Invariants over") :].strip()
    )
    assert requests > SOAK_SECONDS * SOAK_USERS * 0.2, "the shoppers hardly shopped"
    assert failed <= requests * MAX_FAILURE_SHARE, failures(Path(f"{prefix}_failures.csv"))
    for failure in failures(Path(f"{prefix}_failures.csv")):
        # Only answers of processes going away: never a 500.
        assert not re.search(r"\b500\b", failure["Error"]), failure
