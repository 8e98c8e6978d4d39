"""nginx.conf, run by a real nginx in front of the real gateway of the end-to-end stack:
the repository's file with only the upstream address, the listen port, /tmp and (for
the 429 test) the rate limit replaced."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from devstack import REPO_ROOT, Stack
from service_testing import free_port

pytestmark = pytest.mark.e2e

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}
ONE_MIB = 1024 * 1024


def nginx_binary() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if found is None:
        pytest.skip("nginx is not installed: scripts/ensure-deploy-tools.sh installs Debian's")
    return found


def render(directory: Path, upstream_port: int, port: int, rate: str, burst: int) -> Path:
    """nginx.conf with its environment-specific values replaced, each exactly where the
    file has it (a change to the file that breaks this fails here, loudly)."""
    text = (REPO_ROOT / "nginx.conf").read_text()
    replacements = {
        "server api_gateway:8000;": f"server 127.0.0.1:{upstream_port};",
        "listen 80 default_server;": f"listen 127.0.0.1:{port} default_server;",
        "rate=20r/s;": f"rate={rate};",
        "burst=40 nodelay;": f"burst={burst} nodelay;",
    }
    for old, new in replacements.items():
        assert text.count(old) == 1, f"nginx.conf no longer has exactly one {old!r}"
        text = text.replace(old, new)
    assert text.count(" /tmp/") >= 6, "pid and temp paths live in /tmp"
    text = text.replace(" /tmp/", f" {directory}/")
    path = directory / "nginx.conf"
    path.write_text(text)
    return path


@dataclass
class Edge:
    url: str
    access_log: Path

    def log_entry(self, request_id: str) -> dict[str, object]:
        """The JSON access log line of one request (written just after the response)."""
        deadline = time.monotonic() + 5
        while True:
            for line in self.access_log.read_text().splitlines():
                if line.startswith("{") and json.loads(line)["request_id"] == request_id:
                    entry: dict[str, object] = json.loads(line)
                    return entry
            assert time.monotonic() < deadline, f"no access log line for {request_id}"
            time.sleep(0.05)


@contextmanager
def running_nginx(
    stack: Stack, rate: str = "20r/s", burst: int = 40, upstream_port: int | None = None
) -> Iterator[Edge]:
    binary = nginx_binary()
    # Workers run as an unprivileged user when the tests run as root: they must be able
    # to reach the temp paths, so not below pytest's private (0700) directories.
    directory = Path(tempfile.mkdtemp(prefix="nginx-edge-"))
    directory.chmod(0o755)
    port = free_port()
    upstream = upstream_port or stack.ports["api_gateway"]
    config = render(directory, upstream, port, rate, burst)
    access_log = directory / "stdout.log"
    errors = directory / "stderr.log"
    check = subprocess.run(
        [binary, "-t", "-q", "-e", "stderr", "-p", str(directory), "-c", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stderr
    with access_log.open("wb") as stdout, errors.open("wb") as stderr:
        process = subprocess.Popen(
            [binary, "-e", "stderr", "-p", str(directory), "-c", str(config), "-g", "daemon off;"],
            stdout=stdout,
            stderr=stderr,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while True:
            assert process.poll() is None, errors.read_text()
            try:
                if httpx.get(f"{url}/nginx-health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"nginx did not start: {errors.read_text()}"
            time.sleep(0.05)
        yield Edge(url, access_log)
    finally:
        process.send_signal(signal.SIGQUIT)  # graceful: finish requests, then exit
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="module")
def edge(stack: Stack) -> Iterator[Edge]:
    with running_nginx(stack) as running:
        yield running


def assert_security_headers(response: httpx.Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, f"{name} on {response.status_code}"
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "strict-transport-security" not in response.headers, "HSTS only over TLS"
    assert len(response.headers.get_list("x-request-id")) == 1


class TestThroughNginx:
    def test_a_customer_journey(self, edge: Edge) -> None:
        email = f"edge-{uuid.uuid4().hex[:10]}@example.com"
        with httpx.Client(base_url=edge.url, timeout=10) as client:
            registered = client.post(
                "/api/v1/auth/register",
                json={"email": email, "password": "correct-horse", "full_name": "Edge Case"},
            )
            assert registered.status_code == 201, registered.text
            assert_security_headers(registered)
            token = client.post(
                "/api/v1/auth/token", data={"username": email, "password": "correct-horse"}
            )
            assert token.status_code == 200, token.text
            headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
            products = client.get("/api/v1/products", params={"limit": 5})
            assert products.status_code == 200
            assert products.json()["items"]
            me = client.get("/api/v1/users/me", headers=headers)
            assert me.status_code == 200
            assert me.json()["email"] == email
            assert_security_headers(me)

    def test_pages_carry_the_gateways_own_policy_and_the_api_none(self, edge: Edge) -> None:
        with httpx.Client(base_url=edge.url, timeout=10) as client:
            for path in ("/", "/docs"):
                page = client.get(path)
                assert page.status_code == 200, path
                # One policy, the page's: nginx's API policy would block every script.
                assert page.headers.get_list("content-security-policy") == [
                    page.headers["content-security-policy"]
                ]
                assert "script-src 'self'" in page.headers["content-security-policy"], path
                assert page.headers["x-frame-options"] == "DENY"
            script = client.get("/storefront/js/app.js", headers={"Accept-Encoding": "gzip"})
            assert script.status_code == 200
            assert script.headers["content-encoding"] == "gzip"
            assert "content-security-policy" not in script.headers
            api = client.get("/api/v1/products", params={"limit": 1})
            assert api.headers["content-security-policy"].startswith("default-src 'none'")

    def test_json_is_gzipped(self, edge: Edge) -> None:
        response = httpx.get(
            f"{edge.url}/api/v1/products",
            params={"limit": 50},
            headers={"Accept-Encoding": "gzip"},
            timeout=10,
        )
        assert response.status_code == 200
        assert response.headers["content-encoding"] == "gzip"
        assert response.json()["items"], "httpx decoded the gzipped body"

    def test_the_clients_request_id_goes_through_and_is_logged(self, edge: Edge) -> None:
        request_id = f"edge-test-{uuid.uuid4().hex}"
        response = httpx.get(
            f"{edge.url}/api/v1/products/{uuid.uuid4()}",
            headers={"X-Request-ID": request_id},
            timeout=10,
        )
        assert response.status_code == 404  # from the product service, via the gateway
        assert response.headers["x-request-id"] == request_id
        assert response.json()["request_id"] == request_id, "the services saw the same id"
        assert_security_headers(response)
        entry = edge.log_entry(request_id)
        assert entry["status"] == 404
        assert entry["uri"] == f"/api/v1/products/{response.url.path.rsplit('/', 1)[-1]}"
        assert entry["upstream_status"] == "404"

    def test_a_missing_or_insane_request_id_is_replaced(self, edge: Edge) -> None:
        for headers in ({}, {"X-Request-ID": "not sane; has spaces"}):
            response = httpx.get(f"{edge.url}/health/live", headers=headers, timeout=10)
            assert response.status_code == 200
            assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"]), headers

    def test_a_body_over_one_mib_is_refused_before_the_gateway(self, edge: Edge) -> None:
        response = httpx.post(
            f"{edge.url}/api/v1/auth/register",
            content=b"{" + b" " * ONE_MIB + b"}",
            headers={"Content-Type": "application/json"},
            timeout=10,
        )
        assert response.status_code == 413
        assert response.headers["content-type"].startswith("application/problem+json")
        problem = response.json()
        assert problem["status"] == 413
        # The same problem type the gateway and the services use for it.
        assert problem["type"] == "https://errors.ecommerce.example/body-too-large"
        assert problem["request_id"] == response.headers["x-request-id"]
        assert_security_headers(response)
        entry = edge.log_entry(problem["request_id"])
        assert entry["status"] == 413
        assert entry["upstream_status"] == "", "the gateway never saw it"


def test_the_rate_limit_answers_429_per_client(stack: Stack) -> None:
    # The stack runs with the gateway's own limit off: every 429 here is nginx's.
    assert stack.env["RATE_LIMIT_PER_MINUTE"] == "0"
    with running_nginx(stack, rate="2r/s", burst=3) as edge, httpx.Client(timeout=10) as client:
        responses = [client.get(f"{edge.url}/api/v1/products") for _ in range(12)]
        statuses = [response.status_code for response in responses]
        # The burst (and what the rate refilled meanwhile) passes, the rest is refused.
        assert 4 <= statuses.count(200) <= 8, statuses
        assert set(statuses) == {200, 429}, statuses
        limited = next(response for response in responses if response.status_code == 429)
        assert limited.headers["content-type"].startswith("application/problem+json")
        assert limited.headers["retry-after"] == "1"
        assert limited.json()["status"] == 429
        assert_security_headers(limited)
        assert edge.log_entry(limited.headers["x-request-id"])["status"] == 429
        time.sleep(1.6)  # the bucket refills
        assert client.get(f"{edge.url}/api/v1/products").status_code == 200


def test_a_gateway_that_is_down_is_a_503_problem(stack: Stack) -> None:
    with running_nginx(stack, upstream_port=free_port()) as edge:
        response = httpx.get(f"{edge.url}/api/v1/products", timeout=10)
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["request_id"] == response.headers["x-request-id"]
    assert_security_headers(response)
