"""`make run`'s promise, through the command it runs (`python -m devstack run`): the whole
system up on its usual ports with the demo catalog stocked and the administrator able to
log in, and Ctrl-C stopping all of it cleanly."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack import SERVICES
from devstack.stack import REPO_ROOT
from service_testing import delete_topology, unique_topology

pytestmark = [pytest.mark.e2e, pytest.mark.rabbitmq]

GATEWAY = "http://127.0.0.1:8000"


def _port_taken(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _get(path: str, headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(f"{GATEWAY}{path}", headers=headers or {})  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return json.load(response)


def _wait_for(output: Path, text: str, process: subprocess.Popen[bytes], within: float) -> None:
    deadline = time.monotonic() + within
    while text not in output.read_text(errors="replace"):
        assert process.poll() is None, f"exited early:\n{output.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"no {text!r} within {within} s"
        time.sleep(0.5)


#: The running `devstack run` and the file its output goes to.
MakeRun = tuple[subprocess.Popen[bytes], Path]


@pytest.fixture
def make_run(tmp_path: Path) -> Iterator[MakeRun]:
    taken = [spec.port for spec in SERVICES if _port_taken(spec.port)]
    if taken:
        pytest.skip(f"ports {taken} are in use here (a `make run` of your own?)")
    topology = unique_topology("make-run")
    env = {
        **os.environ,
        "DATA_DIR": str(tmp_path / "data"),
        "EVENTS_EXCHANGE": topology.exchange,
        "EVENTS_QUEUE_PREFIX": topology.queue_prefix,
    }
    output = tmp_path / "make-run.log"
    with output.open("wb") as log:
        # A session of its own, as a terminal gives a command: Ctrl-C goes to its group.
        process = subprocess.Popen(
            [sys.executable, "-m", "devstack", "run"],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_for(output, "Ready.", process, within=180)
        yield process, output
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        services = tuple(spec.name for spec in SERVICES)
        asyncio.run(delete_topology(topology, services))


def test_make_run_serves_the_demo_shop_and_stops_cleanly_on_ctrl_c(make_run: MakeRun) -> None:
    process, output = make_run

    assert _get("/health")["status"] == "healthy"
    products = _get("/api/v1/products?limit=100")["items"]
    assert products, "no demo catalog"
    stock = _get(f"/api/v1/inventory/{products[0]['id']}")
    assert stock["available"] > 0, "the demo catalog is not stocked"
    form = urllib.parse.urlencode(
        {"username": "admin@example.com", "password": "admin12345"}
    ).encode()
    with urllib.request.urlopen(f"{GATEWAY}/api/v1/auth/token", form, timeout=10) as response:  # noqa: S310
        token = json.load(response)["access_token"]
    me = _get("/api/v1/users/me", {"Authorization": f"Bearer {token}"})
    assert me["role"] == "admin"

    # Ctrl-C: the terminal signals the whole group, and `uv run` (which `make run` goes
    # through) passes the signal on to its child once more.
    os.killpg(process.pid, signal.SIGINT)
    time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=30) == 0, output.read_text()[-3000:]

    assert "Traceback" not in output.read_text()
    with pytest.raises(ProcessLookupError):  # nothing of the group is left running
        os.killpg(process.pid, 0)
    assert not [spec.port for spec in SERVICES if _port_taken(spec.port)]
