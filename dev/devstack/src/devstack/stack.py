"""The whole system as local processes: `make run`, the end-to-end tests and the
benchmarks all start it from here, so the local topology is written down once.

    python -m devstack run      # migrate, seed, start everything until Ctrl-C
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _repository_root() -> Path:
    """The checkout this runs from: the folder whose `uv.lock` locks the workspace (the
    runner only makes sense beside the sources, never from an installed wheel)."""
    for folder in Path(__file__).resolve().parents:
        if (folder / "uv.lock").is_file() and (folder / "pyproject.toml").is_file():
            return folder
    raise RuntimeError("devstack runs from a checkout of the repository")


REPO_ROOT = _repository_root()


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    port: int
    app: str
    url_variable: str | None
    migrations: str | None = None
    seed_module: str | None = None
    #: Whether it consumes events (its queue must exist before the producers start).
    consumes: bool = False

    @property
    def package(self) -> str:
        """The service's Python package (`user_service`)."""
        return self.app.split(".")[0]


#: Every process of the system, in start order, with its contract port. The consumers of
#: events start first: an event published before its consumer's queue exists goes to the
#: alternate exchange, not to that consumer (the seeded catalog's `product.created`, the
#: administrator's `user.registered`).
SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec(
        "inventory_service",
        8004,
        "inventory_service.main:create_app",
        "INVENTORY_SERVICE_URL",
        "inventory_service/alembic.ini",
        consumes=True,
    ),
    ServiceSpec(
        "notification_service",
        8005,
        "notification_service.main:create_app",
        "NOTIFICATION_SERVICE_URL",
        "notification_service/alembic.ini",
        consumes=True,
    ),
    ServiceSpec(
        "user_service",
        8001,
        "user_service.main:create_app",
        "USER_SERVICE_URL",
        "user_service/alembic.ini",
    ),
    ServiceSpec(
        "product_service",
        8002,
        "product_service.main:create_app",
        "PRODUCT_SERVICE_URL",
        "product_service/alembic.ini",
        "product_service.seed",
    ),
    ServiceSpec(
        "order_service",
        8003,
        "order_service.main:create_app",
        "ORDER_SERVICE_URL",
        "order_service/alembic.ini",
    ),
    ServiceSpec("api_gateway", 8000, "api_gateway.main:create_app", None),
)


@dataclass
class Stack:
    """Running processes and where to reach them."""

    ports: dict[str, int]
    env: dict[str, str]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    log_dir: Path | None = None

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def log_file(self, name: str) -> Path | None:
        return None if self.log_dir is None else self.log_dir / f"{name}.log"

    @property
    def gateway_url(self) -> str:
        return self.url("api_gateway")


def stack_environment(
    ports: Mapping[str, int], data_dir: Path, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("DATA_DIR", str(data_dir))
    env.setdefault("ADMIN_EMAIL", "admin@example.com")
    env.setdefault("ADMIN_PASSWORD", "admin12345")
    for spec in SERVICES:
        if spec.url_variable:
            env[spec.url_variable] = f"http://127.0.0.1:{ports[spec.name]}"
    # The gateway's /health checks exactly the services this stack runs.
    env["HEALTH_SERVICES"] = ",".join(spec.name for spec in SERVICES if spec.url_variable)
    env.update(extra or {})
    return env


def _run(args: list[str], env: Mapping[str, str]) -> None:
    subprocess.run(args, cwd=REPO_ROOT, env=dict(env), check=True)  # noqa: S603 - our own argv


def service_env(spec: ServiceSpec, env: Mapping[str, str]) -> dict[str, str]:
    """One process's environment: `<NAME>_DATABASE_URL` becomes its `DATABASE_URL`."""
    own = dict(env)
    specific = env.get(f"{spec.name.upper()}_DATABASE_URL")
    if specific:
        own["DATABASE_URL"] = specific
    return own


def _migrate_and_seed_one(spec: ServiceSpec, env: Mapping[str, str], seed: bool) -> None:
    own = service_env(spec, env)
    if spec.migrations:
        _run([sys.executable, "-m", "alembic", "-c", spec.migrations, "upgrade", "head"], own)
    if seed and spec.seed_module:
        _run([sys.executable, "-m", spec.seed_module], own)


def migrate_and_seed(env: Mapping[str, str], *, seed: bool = True) -> None:
    """Every service's migrations (then its seed), the services side by side: each has
    its own database, and most of the time goes to starting Python, not to SQL."""
    with ThreadPoolExecutor(max_workers=len(SERVICES)) as pool:
        for done in [pool.submit(_migrate_and_seed_one, spec, env, seed) for spec in SERVICES]:
            done.result()


#: How long a process may take to answer /health/ready: on a busy machine (CI runners,
#: two cores shared by several suites) importing a service alone took 25-30 s.
READY_TIMEOUT_SECONDS = 120.0


def wait_ready(
    url: str,
    timeout: float = READY_TIMEOUT_SECONDS,
    process: subprocess.Popen[bytes] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{url} exited with {process.returncode} while starting")
        with (
            suppress(urllib.error.URLError, ConnectionError, TimeoutError),
            urllib.request.urlopen(f"{url}/health/ready", timeout=1) as response,  # noqa: S310
        ):
            if response.status == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{url} was not ready within {timeout} s")


#: How long a consumer may take to declare its queue; with the broker down the stack
#: starts without waiting longer (the events then wait in the producers' outboxes).
CONSUMING_TIMEOUT_SECONDS = 20.0


def wait_consuming(url: str, timeout: float = CONSUMING_TIMEOUT_SECONDS) -> bool:
    """Wait until the service at `url` consumes its events queue (its readiness check
    `consumer`); False, with a warning, when it does not within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with (
            suppress(urllib.error.URLError, ConnectionError, TimeoutError, ValueError),
            urllib.request.urlopen(f"{url}/health/ready", timeout=1) as response,  # noqa: S310
        ):
            if json.load(response).get("checks", {}).get("consumer") == "ok":
                return True
        time.sleep(0.1)
    print(f"{url} is not consuming events yet (is RabbitMQ up?)", file=sys.stderr, flush=True)
    return False


def start_process(
    spec: ServiceSpec,
    port: int,
    env: Mapping[str, str],
    *,
    workers: int = 1,
    log_file: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start one service; its log lines go to `log_file` when given, else to ours."""
    args = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        spec.app,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--no-access-log",
        # uvloop that accepts a burst of new connections at once (see shared.eventloop).
        "--loop",
        "shared.eventloop:new_event_loop",
        "--timeout-graceful-shutdown",
        "5",
    ]
    if workers > 1:
        args += ["--workers", str(workers)]
    if log_file is None:
        return subprocess.Popen(args, cwd=REPO_ROOT, env=service_env(spec, env))  # noqa: S603
    with log_file.open("ab") as log:  # the child keeps its own descriptor open
        return subprocess.Popen(  # noqa: S603
            args, cwd=REPO_ROOT, env=service_env(spec, env), stdout=log, stderr=subprocess.STDOUT
        )


def stop(stack: Stack) -> None:
    for process in stack.processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    for process in stack.processes.values():
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        if process.poll() is None:
            process.kill()


@contextmanager
def running_stack(
    ports: Mapping[str, int] | None = None,
    data_dir: Path | None = None,
    extra_env: Mapping[str, str] | None = None,
    *,
    seed: bool = True,
    log_dir: Path | None = None,
) -> Iterator[Stack]:
    """Migrate, seed and start every process; stop them all on the way out. With
    `log_dir`, each process logs to `<log_dir>/<service>.log` instead of our output."""
    ports = dict(ports or {spec.name: spec.port for spec in SERVICES})
    env = stack_environment(ports, data_dir or REPO_ROOT / ".data", extra_env)
    migrate_and_seed(env, seed=seed)
    stack = Stack(ports=ports, env=env, log_dir=log_dir)
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
    try:
        for spec in SERVICES:
            log_file = stack.log_file(spec.name)
            process = start_process(spec, ports[spec.name], env, log_file=log_file)
            stack.processes[spec.name] = process
            wait_ready(stack.url(spec.name), process=process)
            if spec.consumes:
                wait_consuming(stack.url(spec.name))
        yield stack
    finally:
        stop(stack)


DEMO_STOCK = 100


def _call(
    method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, None


def stock_demo_catalog(stack: Stack, units: int = DEMO_STOCK) -> int:
    """Give every catalog product without stock `units` on hand, through the public API
    as an administrator would, so that a fresh `make run` can take orders at once."""
    gateway = stack.gateway_url
    form = urllib.parse.urlencode(
        {"username": stack.env["ADMIN_EMAIL"], "password": stack.env["ADMIN_PASSWORD"]}
    ).encode()
    status, tokens = _call(
        "POST",
        f"{gateway}/api/v1/auth/token",
        form,
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    if status != 200:
        return 0
    auth = {"Authorization": f"Bearer {tokens['access_token']}", "Content-Type": "application/json"}
    _, page = _call("GET", f"{gateway}/api/v1/products?limit=100")
    stocked = 0
    for product in page["items"]:
        url = f"{gateway}/api/v1/inventory/{product['id']}"
        status, stock = _call("GET", url)
        if status == 404 or (stock and stock["available"] == 0 and stock["reserved"] == 0):
            status, _ = _call("PUT", url, json.dumps({"available": units}).encode(), auth)
            stocked += status in (200, 201)
    return stocked


def _interrupt(signum: int, frame: object) -> None:
    # Once. Ctrl-C reaches this process twice (from the terminal, and passed on by `uv
    # run`), and a second KeyboardInterrupt would cut short the stop the first one began:
    # a traceback, and a process that outlives its 10 s left running.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description="Run the whole system as local processes.")
    parser.add_argument("command", choices=["run", "migrate"])
    args = parser.parse_args()
    if args.command == "migrate":
        ports = {spec.name: spec.port for spec in SERVICES}
        migrate_and_seed(stack_environment(ports, REPO_ROOT / ".data"))
        return
    # Ctrl-C reaches the children too (same process group); stop() tidies up after them.
    # A `kill` (SIGTERM) stops the whole system the same way.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    with running_stack() as stack:
        stocked = stock_demo_catalog(stack)
        print(
            f"Stocked {stocked} demo products with {DEMO_STOCK} units each.",
            file=sys.stderr,
            flush=True,
        )
        print(
            f"\n  Ready. The shop: {stack.gateway_url}/   The API: {stack.gateway_url}/docs"
            f"\n  Admin: {stack.env['ADMIN_EMAIL']} / "
            f"{stack.env['ADMIN_PASSWORD']}   Press Ctrl-C to stop.\n",
            flush=True,
        )
        with suppress(KeyboardInterrupt):
            while all(p.poll() is None for p in stack.processes.values()):
                time.sleep(0.5)
            failed = [n for n, p in stack.processes.items() if p.poll() is not None]
            print(f"stopping: {', '.join(failed)} exited", file=sys.stderr)
