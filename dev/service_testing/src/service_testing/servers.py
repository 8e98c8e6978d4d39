"""Apps under test, started for real: their lifespan in this process, or served by uvicorn
on a free port as another service would reach them."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import uvicorn
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from service_testing.tokens import LocalTokens
from shared.auth import TokenVerifier, get_token_verifier

#: How long an app under test may take to start.
STARTUP_SECONDS = 60


def accept_local_tokens(app: FastAPI, tokens: LocalTokens) -> None:
    """Make `app` verify `tokens`' tokens itself instead of asking the user service."""
    verifier = tokens.verifier()

    async def local_verifier() -> TokenVerifier:
        return verifier

    app.dependency_overrides[get_token_verifier] = local_verifier


@contextlib.asynccontextmanager
async def running_app(app: FastAPI, tokens: LocalTokens | None = None) -> AsyncIterator[FastAPI]:
    """Run `app`'s lifespan around the block; with `tokens`, it accepts their tokens."""
    if tokens is not None:
        accept_local_tokens(app, tokens)
    # asgi-lifespan's 5 s default is short for a start-up that hashes a password
    # (user_service's administrator) on a busy CI machine.
    async with LifespanManager(app, startup_timeout=STARTUP_SECONDS, shutdown_timeout=30):
        yield app


class QuietServer(uvicorn.Server):
    """uvicorn inside the test run: Ctrl-C stays pytest's."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serve(app: Any, *, in_thread: bool = False, **config: Any) -> AsyncIterator[str]:
    """Serve an ASGI app over real HTTP on a free port until the block ends; yields its
    base URL. `in_thread` runs it on an event loop of its own, as if it were another
    process; `config` goes to `uvicorn.Config`."""
    # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY only on sockets that say so, and
    # without it every small response waits 40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    options: dict[str, Any] = {
        "log_config": None,
        "log_level": "warning",
        "access_log": False,
        "lifespan": "on",
        **config,
    }
    server = QuietServer(uvicorn.Config(app, **options))
    thread: threading.Thread | None = None
    task: asyncio.Task[None] | None = None
    if in_thread:
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True
        )
        thread.start()
    else:
        task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(30):
            while not server.started:
                if task is not None and task.done():
                    task.result()
                if thread is not None and not thread.is_alive():
                    raise RuntimeError("the server did not start")
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        if task is not None:
            await task
        if thread is not None:
            await asyncio.to_thread(thread.join, 15)
        sock.close()


#: Ports `free_port` has handed out in this process: each goes to one server only.
_handed_out: set[int] = set()
_handing_out = threading.Lock()


def free_port() -> int:
    """A port nothing listens on now (a service that is down, or one to start).

    Taken below the kernel's ephemeral range, never twice in one process. A port the
    kernel picks (a bind to port 0) comes from the range it also gives the outgoing
    connections, and between this probe and the server's own bind any of them can take
    it: nginx of the replica stack once failed so ('Address already in use')."""
    lowest_ephemeral = _lowest_ephemeral_port()
    first = 20000 if lowest_ephemeral > 21000 else 1024
    with _handing_out:
        # No range below the ephemeral one (a machine set to give out every port): the
        # kernel's pick below.
        for _ in range(1000 if lowest_ephemeral > first else 0):
            port = random.randrange(first, lowest_ephemeral)  # noqa: S311 - not a secret
            if port in _handed_out:
                continue
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
            _handed_out.add(port)
            return port
    with socket.socket() as sock:  # the range is full: any port the kernel picks
        sock.bind(("127.0.0.1", 0))
        picked: int = sock.getsockname()[1]
        return picked


def _lowest_ephemeral_port() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ports:
            return int(ports.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


@contextlib.asynccontextmanager
async def hung_server() -> AsyncIterator[str]:
    """A server that accepts connections, reads what it is sent and never answers (a
    hung process, not a closed port); yields its URL."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        while await reader.read(65536):
            pass

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        for writer in held:
            writer.close()
