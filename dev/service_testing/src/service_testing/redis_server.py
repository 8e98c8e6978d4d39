"""A Redis server of the test run's own (no persistence, a free port), for what replicas
share through Redis: the gateway's rate-limit counters."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path


def _answers_ping(port: int) -> bool:
    with suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(64).startswith(b"+PONG")
    return False


@contextmanager
def private_redis(folder: Path) -> Iterator[str]:
    """Run redis-server on a free port until the block ends; yields its URL."""
    from service_testing.servers import free_port

    binary = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/sbin")
    if binary is None:
        raise FileNotFoundError("redis-server is not installed (Debian: apt-get install redis)")
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    args = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly"]
    args += ["no", "--dir", str(folder), "--logfile", str(folder / "redis.log")]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL)  # noqa: S603 - our own argv
    try:
        deadline = time.monotonic() + 30
        while not _answers_ping(port):
            if process.poll() is not None:
                raise RuntimeError(f"redis-server exited; see {folder / 'redis.log'}")
            if time.monotonic() > deadline:
                raise TimeoutError("redis-server did not answer within 30 s")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
