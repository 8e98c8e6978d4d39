"""docker-compose.yml run for real: the images built from the Dockerfile, the stack up
from empty volumes (migrations first), a customer's journey through nginx, then `down -v`.

There is no Docker engine here: Debian's docker-compose drives podman's
Docker-compatible API (`podman system service`), on images that
scripts/ensure-containers.sh builds from Debian's packages in place of the ones compose
would pull (tests/deploy/images/: Python, uv, PostgreSQL, RabbitMQ, Redis, nginx). The
observability services (Prometheus, Grafana, the OpenTelemetry Collector, Jaeger) are not
started: nothing here can pull their images and Debian packages none but Prometheus; the
shop does not depend on them (README, "Deployment").

Podman runs no health check on its own without systemd: `HealthTicker` runs them, as
Docker's engine would, so that `condition: service_healthy` is honoured.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.deploy.manifests import REPO, SPECS, dist_name

pytestmark = pytest.mark.compose

PREFIX = "localhost/ecommerce-test"
STAND_INS = REPO / "tests" / "deploy" / "images" / "docker-compose.stand-ins.yml"
ADMIN = {"username": "admin@example.com", "password": "compose-admin-password"}
#: What `up` starts: nginx and everything it depends on (the observability services
#: are left out, see above).
ENTRY = "nginx"
DEV_TOOLS = {"pytest", "mypy", "ruff", "kubernetes-validate"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def base_image_arguments() -> dict[str, str]:
    """The Dockerfile's BASE_IMAGE and UV_IMAGE pointed at the stand-ins, same tags."""
    arguments = {}
    for line in (REPO / "Dockerfile").read_text().splitlines():
        if line.startswith(("ARG BASE_IMAGE=", "ARG UV_IMAGE=")):
            name, _, default = line.removeprefix("ARG ").partition("=")
            repository, _, tag = default.rpartition(":")
            arguments[name] = f"{PREFIX}/{repository.rsplit('/', 1)[-1]}:{tag}"
    assert set(arguments) == {"BASE_IMAGE", "UV_IMAGE"}, arguments
    return arguments


class PodmanService:
    """`podman system service` on a socket of its own: the Docker API docker-compose
    talks to."""

    def __init__(self, directory: Path) -> None:
        self.socket = directory / "podman.sock"
        self.process = subprocess.Popen(
            ["podman", "system", "service", "--time=0", f"unix://{self.socket}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while not self._pings():
            assert self.process.poll() is None, "podman system service exited"
            assert time.monotonic() < deadline, "podman's API did not come up"
            time.sleep(0.2)

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def _pings(self) -> bool:
        if not self.socket.exists():
            return False
        connection = http.client.HTTPConnection("localhost", timeout=5)
        connection.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            connection.sock.connect(str(self.socket))
            connection.request("GET", "/_ping")
            return connection.getresponse().status == 200
        except OSError:
            return False
        finally:
            connection.close()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class HealthTicker(threading.Thread):
    """Runs the health check of each of the project's running containers every
    `interval` seconds, as Docker's engine does by itself (podman needs systemd timers
    for that, which this machine has not)."""

    def __init__(self, project: str, interval: float = 2.0) -> None:
        super().__init__(daemon=True)
        self.project = project
        self.interval = interval
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            listed = subprocess.run(
                [
                    "podman",
                    "ps",
                    "--filter",
                    f"label=com.docker.compose.project={self.project}",
                    "--format",
                    "{{.ID}} {{.Status}}",
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            for line in listed.stdout.splitlines():
                container, _, status = line.partition(" ")
                if "(" in status:  # "Up 3 seconds ago (starting)": it has a health check
                    subprocess.run(
                        ["podman", "healthcheck", "run", container],
                        capture_output=True,
                        check=False,
                        timeout=60,
                    )

    def stop(self) -> None:
        self.stopped.set()
        if self.ident is not None:  # started (the images may have failed to build first)
            self.join(timeout=60)


@dataclass
class Compose:
    """docker-compose on the repository's file plus the stand-ins, as one project."""

    project: str
    environment: dict[str, str]
    env_file: Path

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                "docker-compose",
                "--project-name",
                self.project,
                "--project-directory",
                str(REPO),
                "--file",
                str(REPO / "docker-compose.yml"),
                "--file",
                str(STAND_INS),
                "--env-file",
                str(self.env_file),
                *args,
            ],
            capture_output=True,
            text=True,
            env=self.environment,
            timeout=timeout,
            check=False,
        )

    def check(self, *args: str, timeout: float = 300) -> str:
        result = self.run(*args, timeout=timeout)
        assert result.returncode == 0, (
            f"docker-compose {' '.join(args)}:\n{result.stderr[-4000:]}\n{self.logs()}"
        )
        return result.stdout

    def logs(self) -> str:
        result = self.run("logs", "--no-color", "--tail", "25", timeout=120)
        return result.stdout[-12000:]

    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = yaml.safe_load(self.check("config"))
        return config


def build_images(config: Mapping[str, Any]) -> list[str]:
    """Every image compose would build, built by podman with compose's build arguments
    on the stand-in base images (docker-compose's own `build` goes through podman's
    classic build API, which has no cache mounts)."""
    built = []
    for service in config["services"].values():
        build = service.get("build")
        if build is None or service["image"] in built:
            continue
        arguments = {**build.get("args", {}), **base_image_arguments()}
        command = [
            "podman",
            "build",
            "--quiet",
            "--format",
            "docker",
            "--file",
            str(Path(build["context"]) / build["dockerfile"]),
            "--tag",
            service["image"],
        ]
        for name, value in arguments.items():
            command += ["--build-arg", f"{name}={value}"]
        result = subprocess.run(
            [*command, build["context"]], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, f"building {service['image']}:\n{result.stderr[-4000:]}"
        built.append(service["image"])
    return built


@dataclass
class Stack:
    compose: Compose
    base_url: str
    images: list[str]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    for tool in ("podman", "docker-compose"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed: scripts/ensure-containers.sh installs it")
    directory = tmp_path_factory.mktemp("compose-stack")
    env_file = directory / "empty.env"
    env_file.write_text("")
    port = free_port()
    podman = PodmanService(directory)
    compose = Compose(
        project=f"ecommerce-test-{os.getpid()}",
        environment={
            "PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            "DOCKER_HOST": podman.url,
            "ADMIN_EMAIL": ADMIN["username"],
            "ADMIN_PASSWORD": ADMIN["password"],
            "IMAGE_PREFIX": PREFIX,
            "IMAGE_TAG": "test",
            "HTTP_PORT": str(port),
            "RABBITMQ_MANAGEMENT_PORT": str(free_port()),
            # The gateway's per-client limit would count the whole test as one client.
            "RATE_LIMIT_PER_MINUTE": "0",
        },
        env_file=env_file,
    )
    ticker = HealthTicker(compose.project)
    try:
        images = build_images(compose.config())
        ticker.start()
        compose.check("up", "--detach", "--no-build", ENTRY, timeout=600)
        yield Stack(compose, f"http://127.0.0.1:{port}", images)
    finally:
        ticker.stop()
        compose.run("down", "--volumes", "--remove-orphans", timeout=300)
        podman.stop()


def wait_for_health(client: httpx.Client, within: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        try:
            response = client.get("/health")
            if response.status_code == 200:
                body: dict[str, Any] = response.json()
                return body
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the stack never became healthy through nginx"
        time.sleep(1)


def token(client: httpx.Client, email: str, password: str) -> dict[str, str]:
    response = client.post("/api/v1/auth/token", data={"username": email, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def test_every_image_is_built_from_the_one_dockerfile(stack: Stack) -> None:
    expected = {f"{PREFIX}/{pkg.replace('_', '-')}:test" for pkg in SPECS}
    assert set(stack.images) == expected


def test_each_image_holds_its_service_and_nothing_for_development(stack: Stack) -> None:
    services = {dist_name(pkg) for pkg in SPECS}
    for pkg in SPECS:
        listed = subprocess.run(
            [
                "podman",
                "run",
                "--rm",
                "--read-only",
                f"{PREFIX}/{pkg.replace('_', '-')}:test",
                "python",
                "-c",
                "import json, importlib.metadata as m;"
                "print(json.dumps([d.metadata['Name'] for d in m.distributions()]))",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert listed.returncode == 0, listed.stderr
        installed = set(json.loads(listed.stdout))
        assert {dist_name(pkg), "uvicorn"} <= installed, pkg
        assert not installed & (services - {dist_name(pkg)}), f"{pkg}: other services installed"
        assert not installed & DEV_TOOLS, f"{pkg}: development tools installed"
        assert not installed & {"devstack", "service-testing"}, f"{pkg}: runner or test support"
        if SPECS[pkg].migrations:
            assert "alembic" in installed, pkg


def test_every_migration_ran_to_completion_on_the_fresh_volume(stack: Stack) -> None:
    listed = stack.compose.check("ps", "--all")
    for pkg, spec in SPECS.items():
        if spec.migrations is None:
            continue
        (line,) = [row for row in listed.splitlines() if f"{pkg}-migrate" in row]
        assert "Exit 0" in line or "Exited (0)" in line, line


def test_a_customer_is_served_end_to_end_through_nginx(stack: Stack) -> None:
    with httpx.Client(base_url=stack.base_url, timeout=30) as client:
        health = wait_for_health(client)
        assert health["status"] == "healthy", health
        assert set(health["services"]) == set(SPECS) - {"api_gateway"}, health
        assert set(health["services"].values()) == {"healthy"}, health

        admin = token(client, ADMIN["username"], ADMIN["password"])
        created = client.post(
            "/api/v1/products",
            json={
                "sku": f"CMP-{uuid.uuid4().hex[:10]}",
                "name": "Compose kettle",
                "price": "19.90",
                "category": "home",
            },
            headers=admin,
        )
        assert created.status_code == 201, created.text
        # nginx is in front: it answers with the request id it made or kept.
        assert created.headers.get("x-request-id")
        product_id = created.json()["id"]
        stocked = client.put(
            f"/api/v1/inventory/{product_id}", json={"available": 5}, headers=admin
        )
        assert stocked.status_code in (200, 201), stocked.text

        email = f"compose-{uuid.uuid4().hex[:10]}@example.com"
        registered = client.post(
            "/api/v1/auth/register",
            json={"email": email, "password": "correct-horse", "full_name": "Compose Buyer"},
        )
        assert registered.status_code == 201, registered.text
        customer = token(client, email, "correct-horse")
        ordered = client.post(
            "/api/v1/orders",
            json={"items": [{"product_id": product_id, "quantity": 2}], "payment_token": "tok_ok"},
            headers={**customer, "Idempotency-Key": f"compose-{uuid.uuid4()}"},
        )
        assert ordered.status_code == 201, ordered.text
        order = ordered.json()
        assert order["status"] == "confirmed"

        stock = client.get(f"/api/v1/inventory/{product_id}")
        assert stock.json()["available"] == 3, stock.text

        # The events went through the stack's RabbitMQ to the notification service.
        expected = {("welcome", None), ("order_confirmed", order["id"])}
        deadline = time.monotonic() + 60
        while True:
            listed = client.get("/api/v1/notifications", headers=customer)
            assert listed.status_code == 200, listed.text
            seen = {(item["kind"], item["order_id"]) for item in listed.json()["items"]}
            if expected <= seen:
                break
            assert time.monotonic() < deadline, f"missing notifications: {expected - seen}"
            time.sleep(0.5)


#: Run inside a service's container with its own RABBITMQ_URL: publish one message on the
#: events exchange (routing key ROUTING_KEY), or read one from queue QUEUE; print what
#: the broker said.
BROKER_PROBE = """
import asyncio, os, aio_pika

async def main():
    async with await aio_pika.connect(os.environ["RABBITMQ_URL"]) as connection:
        channel = await connection.channel(publisher_confirms=True)
        try:
            if "QUEUE" in os.environ:
                queue = await channel.get_queue(os.environ["QUEUE"], ensure=False)
                await queue.get(fail=False)
            else:
                exchange = await channel.get_exchange("ecommerce.events", ensure=False)
                await exchange.publish(
                    aio_pika.Message(b"{}"), routing_key=os.environ["ROUTING_KEY"]
                )
        except Exception as error:
            print(type(error).__name__, error)
        else:
            print("allowed")

asyncio.run(main())
"""


def broker_probe(stack: Stack, service: str, **environment: str) -> str:
    """What the broker answers `service`, logged in as itself, for BROKER_PROBE."""
    listed = subprocess.run(
        [
            "podman",
            "ps",
            "--filter",
            f"label=com.docker.compose.project={stack.compose.project}",
            "--filter",
            f"label=com.docker.compose.service={service}",
            "--format",
            "{{.ID}}",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    container = listed.stdout.split()[0]
    options = [f"--env={name}={value}" for name, value in environment.items()]
    probed = subprocess.run(
        ["podman", "exec", *options, container, "python", "-c", BROKER_PROBE],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert probed.returncode == 0, probed.stderr
    return probed.stdout.strip()


@pytest.mark.parametrize(
    ("service", "probe", "allowed"),
    [
        # Its own resource's types: the broker takes them (nothing binds this one).
        ("product_service", {"ROUTING_KEY": "product.probe"}, True),
        ("product_service", {"ROUTING_KEY": "user.registered"}, False),
        ("user_service", {"ROUTING_KEY": "order.confirmed"}, False),
        # A consumer publishes nothing at all.
        ("inventory_service", {"ROUTING_KEY": "order.confirmed"}, False),
        ("notification_service", {"ROUTING_KEY": "user.registered"}, False),
        ("inventory_service", {"QUEUE": "inventory_service.events"}, True),
        ("inventory_service", {"QUEUE": "notification_service.events"}, False),
        ("order_service", {"QUEUE": "inventory_service.events"}, False),
    ],
)
def test_each_service_publishes_its_own_events_and_reads_its_own_queue_only(
    stack: Stack, service: str, probe: dict[str, str], allowed: bool
) -> None:
    """One broker user per service (kubernetes/overlays/dev/rabbitmq/definitions.sh), from
    inside its container: a service may not publish another's event types nor read
    another's queue, so one broken into cannot forge an order's confirmation."""
    with httpx.Client(base_url=stack.base_url, timeout=30) as client:
        wait_for_health(client)  # every service has declared its queues
    answer = broker_probe(stack, service, **probe)
    if allowed:
        assert answer == "allowed", answer
    else:
        assert "ACCESS_REFUSED" in answer, answer
