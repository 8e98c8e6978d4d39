"""A RabbitMQ node of the test run's own: its node name, ports, data and logs under a
temporary folder. A test may stop, restart or kill it without disturbing the machine's
shared broker, which other test runs use at the same moment."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

#: Debian's packages put the real scripts here; /usr/sbin only has a wrapper that
#: switches to the `rabbitmq` user (and so could not write our folder).
_DEBIAN_BIN = Path("/usr/lib/rabbitmq/bin")
_SEARCH_PATH = os.pathsep.join([str(_DEBIAN_BIN), os.environ.get("PATH", ""), "/usr/sbin"])
#: How long a boot may take on a busy two-core machine (about 2 s when idle).
BOOT_TIMEOUT_SECONDS = 90.0


def _executable(name: str) -> str:
    found = shutil.which(name, path=_SEARCH_PATH)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed (scripts/ensure-rabbitmq.sh installs it)")
    return found


def _free_port() -> int:
    # Imported late: servers imports uvicorn and FastAPI, which a broker does not need.
    from service_testing.servers import free_port

    return free_port()


@dataclass
class RabbitMQNode:
    """One running node; `url` is its AMQP URL (guest on the loopback)."""

    name: str
    port: int
    folder: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def log_file(self) -> Path:
        return self.folder / "node.log"

    def ctl(self, *args: str, timeout: float = 120) -> str:
        """Run `rabbitmqctl` against this node (and no other); returns its output."""
        result = subprocess.run(  # noqa: S603 - our own argv
            [_executable("rabbitmqctl"), "-q", "-n", self.name, *args],
            env=self._env(),
            check=True,
            capture_output=True,
            timeout=timeout,
        )
        return result.stdout.decode()

    def stop_app(self) -> None:
        """Stop the broker application: every connection drops, the port refuses."""
        self.ctl("stop_app")

    def start_app(self) -> None:
        self.ctl("start_app")
        self.await_startup()

    def restart(self) -> None:
        """A broker restart as an operator would do it (durable queues survive)."""
        self.stop_app()
        self.start_app()

    def await_startup(self, timeout: float = BOOT_TIMEOUT_SECONDS) -> None:
        """Wait until the node has booted (`await_startup` fails while its VM is not yet
        registered, so it is retried)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"RabbitMQ node {self.name} exited; see {self.log_file}")
            try:
                self.ctl("await_startup", "--timeout", "30", timeout=60)
                return
            except subprocess.CalledProcessError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    def _env(self) -> dict[str, str]:
        # The CLI finds the node's Erlang cookie in $HOME, as the node made it there.
        return {**os.environ, "HOME": str(self.folder)}


def _node_environment(folder: Path, name: str, port: int) -> dict[str, str]:
    (folder / "enabled_plugins").write_text("[].\n")  # no management UI on a shared port
    (folder / "rabbitmq.conf").write_text(f"listeners.tcp.default = 127.0.0.1:{port}\n")
    return {
        **os.environ,
        "HOME": str(folder),
        "RABBITMQ_NODENAME": name,
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(_free_port()),
        "RABBITMQ_CONFIG_FILE": str(folder / "rabbitmq"),
        "RABBITMQ_ADVANCED_CONFIG_FILE": str(folder / "advanced.config"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(folder / "enabled_plugins"),
        "RABBITMQ_MNESIA_BASE": str(folder / "mnesia"),
        "RABBITMQ_LOG_BASE": str(folder / "log"),
        "RABBITMQ_PID_FILE": str(folder / "node.pid"),
    }


@contextmanager
def private_rabbitmq(folder: Path, label: str = "test") -> Iterator[RabbitMQNode]:
    """Boot a node with everything of its own under `folder`; stop it on the way out."""
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{label}-{uuid.uuid4().hex[:8]}@localhost"
    port = _free_port()
    env = _node_environment(folder, name, port)
    with (folder / "node.log").open("ab") as log:
        process = subprocess.Popen(  # noqa: S603 - our own argv
            [_executable("rabbitmq-server")],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            # A session of its own: stopping it never signals the test run.
            start_new_session=True,
        )
    node = RabbitMQNode(name=name, port=port, folder=folder, process=process)
    try:
        node.await_startup()
        yield node
    finally:
        _stop(node)


def _stop(node: RabbitMQNode) -> None:
    """SIGTERM makes the foreground script stop the node cleanly; kill what lingers."""
    if node.process.poll() is None:
        node.process.terminate()
        with suppress(subprocess.TimeoutExpired):
            node.process.wait(timeout=30)
    # The Erlang VM is the script's child, in the group the node was started in.
    with suppress(ProcessLookupError):
        os.killpg(node.process.pid, signal.SIGKILL)
    node.process.wait(timeout=10)
