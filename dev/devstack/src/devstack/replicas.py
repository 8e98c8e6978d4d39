"""The system scaled out on one machine: several processes of every service and of the
gateway, each group behind an nginx upstream, as a Kubernetes Service or a load
balancer would put them behind one address.

The services name each other by one URL (`ORDER_SERVICE_URL`...), so something must
spread the calls over the replicas; nginx is what the deployment already puts at the
edge, and round-robin per request (with keep-alive to the replicas) is what a Service's
proxy does. A replica that refuses connections is skipped (`proxy_next_upstream`), so a
killed process costs only the requests it was serving.

    with running_replicas(ports, replicas=2, data_dir=..., extra_env=...) as stack:
        stack.kill("order_service", 0)            # SIGKILL one replica
        stack.start("order_service", 0)           # and bring it back
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from devstack.stack import (
    SERVICES,
    ServiceSpec,
    migrate_and_seed,
    stack_environment,
    start_process,
    wait_ready,
)

_SPECS = {spec.name: spec for spec in SERVICES}


@dataclass
class ReplicatedStack:
    """Running replicas, their balancer, and where to reach them."""

    #: The balancer's port of each service: what the URLs in `env` and clients use.
    ports: dict[str, int]
    #: The ports of each service's own processes, by replica index.
    replica_ports: dict[str, list[int]]
    env: dict[str, str]
    log_dir: Path
    processes: dict[tuple[str, int], subprocess.Popen[bytes]] = field(default_factory=dict)

    def url(self, name: str) -> str:
        """The service's address behind the balancer."""
        return f"http://127.0.0.1:{self.ports[name]}"

    def replica_url(self, name: str, index: int) -> str:
        """One process of the service, bypassing the balancer."""
        return f"http://127.0.0.1:{self.replica_ports[name][index]}"

    @property
    def gateway_url(self) -> str:
        return self.url("api_gateway")

    def log_file(self, name: str, index: int) -> Path:
        return self.log_dir / f"{name}-{index}.log"

    def start(self, name: str, index: int, *, wait: bool = True) -> None:
        """Start (or start again) one replica; with `wait`, until it is ready."""
        spec = _SPECS[name]
        process = start_process(
            spec,
            self.replica_ports[name][index],
            self.env,
            log_file=self.log_file(name, index),
        )
        self.processes[name, index] = process
        if wait:
            wait_ready(self.replica_url(name, index), process=process)

    def kill(self, name: str, index: int, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send `sig` to one replica and wait for it to end (SIGKILL: a crash, nothing
        of its in-flight work finishes; SIGTERM: a graceful stop)."""
        process = self.processes[name, index]
        if process.poll() is None:
            process.send_signal(sig)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self, name: str, sig: signal.Signals = signal.SIGTERM) -> None:
        """A rolling restart of every replica of `name`, one after the other, each back
        and ready before the next goes (as a Deployment's rollout does)."""
        for index in range(len(self.replica_ports[name])):
            self.kill(name, index, sig)
            self.start(name, index)


#: What the balancer answers when the replica serving a request went away (killed) or
#: none answers: a problem document, as the contract wants every error to be, with the
#: request id the caller sent.
_UNAVAILABLE = (
    '{"type": "https://errors.ecommerce.example/upstream-unavailable",'
    ' "title": "Upstream service unavailable", "status": 503,'
    ' "detail": "The process serving this request went away; try again.",'
    ' "request_id": "$problem_request_id"}'
)


def render_balancer(
    directory: Path,
    ports: Mapping[str, int],
    replica_ports: Mapping[str, list[int]],
    error_log: Path,
) -> str:
    """nginx.conf with one upstream and one listening server per service."""
    blocks = []
    for name, port in ports.items():
        servers = "".join(
            # max_fails=0: never take a replica out on its own failures. nginx would
            # otherwise keep one that was just restarted out for fail_timeout, and a
            # rolling restart's next step would leave it no live upstream at all; a
            # replica that is down costs a refused connection on the loopback instead.
            f"        server 127.0.0.1:{replica} max_fails=0;\n"
            for replica in replica_ports[name]
        )
        blocks.append(
            # keepalive_timeout under uvicorn's own 5 s: nginx must drop an idle connection
            # before the replica does, or it reuses one the replica is closing and the
            # request on it fails ("upstream prematurely closed"), as the edge does too.
            f"    upstream {name} {{\n{servers}        keepalive 32;\n"
            f"        keepalive_timeout 4s;\n    }}\n"
            f"    server {{\n"
            f"        listen 127.0.0.1:{port};\n"
            f"        location / {{ proxy_pass http://{name}; }}\n"
            f"        error_page 502 504 = @unavailable;\n"
            f"        location @unavailable {{\n"
            f"            default_type application/problem+json;\n"
            f"            add_header Retry-After 1 always;\n"
            f"            add_header X-Request-ID $problem_request_id always;\n"
            f"            return 503 '{_UNAVAILABLE}';\n"
            f"        }}\n"
            f"    }}\n"
        )
    return f"""worker_processes 1;
pid {directory}/nginx.pid;
error_log {error_log} warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {directory}/body;
    proxy_temp_path {directory}/proxy;
    fastcgi_temp_path {directory}/fastcgi;
    uwsgi_temp_path {directory}/uwsgi;
    scgi_temp_path {directory}/scgi;
    # The services refuse bodies over 1 MiB themselves, with a problem document.
    client_max_body_size 0;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host $http_host;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    # Order status streams (server-sent events) go through as they are written.
    proxy_buffering off;
    proxy_request_buffering off;
    proxy_read_timeout 120s;
    # A replica that refuses the connection is skipped; a request it already received
    # is not sent twice (nginx never retries a POST once sent).
    proxy_next_upstream error timeout;
    # The caller's request id, or one of nginx's own when it sent none.
    map $http_x_request_id $problem_request_id {{
        "" $request_id;
        default $http_x_request_id;
    }}
{"".join(blocks)}}}
"""


def _nginx_binary() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if found is None:
        raise FileNotFoundError("nginx is not installed (scripts/ensure-deploy-tools.sh)")
    return found


def _wait_listening(url: str, process: subprocess.Popen[bytes], errors: Path) -> None:
    deadline = time.monotonic() + 10
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"nginx exited: {errors.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - our own URL
                return
        except urllib.error.HTTPError:
            return  # an answer (502 before the replicas are up) means it listens
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextmanager
def running_balancer(
    ports: Mapping[str, int], replica_ports: Mapping[str, list[int]], error_log: Path
) -> Iterator[Path]:
    """nginx in front of every service's replicas until the block ends; yields its folder.
    Its error log (a replica that refused or dropped a request, and why) goes to
    `error_log`, which outlives it."""
    binary = _nginx_binary()
    # Workers run as an unprivileged user when this runs as root: they must reach the
    # temp paths, so not below pytest's private (0700) folders.
    directory = Path(tempfile.mkdtemp(prefix="devstack-balancer-"))
    directory.chmod(0o755)
    config = directory / "nginx.conf"
    config.write_text(render_balancer(directory, ports, replica_ports, error_log))
    errors = directory / "stderr.log"
    argv = [binary, "-e", "stderr", "-p", str(directory), "-c", str(config)]
    with errors.open("wb") as stderr:
        process = subprocess.Popen(  # noqa: S603 - our own argv
            [*argv, "-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=stderr
        )
    try:
        _wait_listening(f"http://127.0.0.1:{next(iter(ports.values()))}/", process, errors)
        yield directory
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(directory, ignore_errors=True)


def _stop_all(processes: Mapping[tuple[str, int], subprocess.Popen[bytes]]) -> None:
    for process in processes.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 10
    for process in processes.values():
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        if process.poll() is None:
            process.kill()
            process.wait()


def _start_group(stack: ReplicatedStack, spec: ServiceSpec) -> None:
    """Every replica of one service at once (they import side by side), then wait."""
    for index in range(len(stack.replica_ports[spec.name])):
        stack.start(spec.name, index, wait=False)
    for index in range(len(stack.replica_ports[spec.name])):
        wait_ready(stack.replica_url(spec.name, index), process=stack.processes[spec.name, index])


@contextmanager
def running_replicas(
    ports: Mapping[str, int],
    replica_ports: Mapping[str, list[int]],
    data_dir: Path,
    extra_env: Mapping[str, str] | None = None,
    *,
    log_dir: Path,
    seed: bool = True,
) -> Iterator[ReplicatedStack]:
    """Migrate and seed once, then start the balancer and every replica (each logging to
    `<log_dir>/<service>-<index>.log`); stop them all on the way out. Replicas of one
    service share its database (`<SERVICE>_DATABASE_URL`: PostgreSQL, as SQLite files
    are not shared between processes in production)."""
    env = stack_environment(ports, data_dir, extra_env)
    migrate_and_seed(env, seed=seed)
    log_dir.mkdir(parents=True, exist_ok=True)
    stack = ReplicatedStack(
        ports=dict(ports),
        replica_ports={name: list(found) for name, found in replica_ports.items()},
        env=env,
        log_dir=log_dir,
    )
    with running_balancer(ports, replica_ports, log_dir / "balancer.log"):
        try:
            # In the order of SERVICES, as `running_stack` starts them.
            for spec in SERVICES:
                _start_group(stack, spec)
            yield stack
        finally:
            _stop_all(stack.processes)
