"""The event loop every service runs on: uvloop, accepting new connections in batches and
sending what a turn of the loop writes to a connection in one system call.

    uvicorn --loop shared.eventloop:new_event_loop --factory order_service.main:create_app

Since libuv 1.45 (libuv/libuv#3696) uvloop accepts one connection per turn of the loop,
and a turn of a busy service takes as long as a step of every request in flight. When a
burst of new connections arrives while a service is loaded (the gateway growing its pool
from 32 to 256 connections to order_service), they wait in the kernel's accept queue: in
`make bench-checkout` order_service accepted about 17 a second, 172 connections queued
for up to 7 s, and wrk timed out dozens of orders that the service itself served in under
2.5 s (Node.js met the same regression, nodejs/performance#95). The stdlib loop accepts up
to the listen backlog at once but costs a tenth more CPU per order. So the loop here is
uvloop with the stdlib's accept: on a readable listening socket it takes every waiting
connection (up to the backlog) and hands each to uvloop as an accepted socket.

Only plain TCP servers are served this way; TLS and Unix sockets keep uvloop's own.

Those connections also send what one turn of the loop writes to them in one system call
(`CoalescingTransport`): uvicorn writes a response's status line and headers, then its
body, and uvloop sends each write at once, so every response went out as two TCP
segments that the client read twice. One segment instead: the cached product read costs
23% less CPU, directly and through the gateway (three alternating wrk rounds).

And a numeric address (`127.0.0.1`, `::1`) is looked up at once, in the loop
(`Loop.getaddrinfo`). uvloop's `sock_connect`, which aiohttp connects through, asks
`getaddrinfo` with no socket type, and uvloop's own shortcut for numeric addresses needs
one, so every new connection between services waited for a thread of libuv's resolver
pool (four threads, shared by every lookup of the process). A few lookups of names whose
DNS answers slowly (webhook hosts) held that pool for seconds, and notification_service
could not reach user_service at 127.0.0.1 to check a token: every authenticated request
was a 503 until they ended.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import Callable, Iterable
from typing import Any, cast

import uvloop

logger = logging.getLogger(__name__)

#: What `--loop` (or `UVICORN_LOOP`) says to run a service on this loop.
UVICORN_LOOP = "shared.eventloop:new_event_loop"

#: Errors of `accept()` that say the process or the system is out of something (open
#: files, buffers): accepting stops for a while rather than spinning, as asyncio does.
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
ACCEPT_RETRY_SECONDS = 1.0


#: Written and not yet sent past this, a connection sends at once: the transport's flow
#: control (pause_writing) then holds back a producer that writes without yielding.
FLUSH_AT_BYTES = 64 * 1024


class CoalescingTransport:
    """A connection's transport whose writes within one turn of the loop leave together,
    in one system call at the start of the next turn (or at once past `FLUSH_AT_BYTES`);
    everything else is the transport's own."""

    __slots__ = ("_loop", "_pending", "_pending_bytes", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None
        self._pending_bytes = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        chunk = bytes(data)  # a copy of a buffer its writer may reuse
        if self._pending is None:
            self._pending = []
            self._loop.call_soon(self._flush)
        self._pending.append(chunk)
        self._pending_bytes += len(chunk)
        if self._pending_bytes >= FLUSH_AT_BYTES:
            self._flush()

    def writelines(self, lines: Iterable[bytes | bytearray | memoryview]) -> None:
        for data in lines:
            self.write(data)

    def _flush(self) -> None:
        pending, self._pending, self._pending_bytes = self._pending, None, 0
        if pending and not self._transport.is_closing():
            self._transport.writelines(pending)

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def close(self) -> None:
        """Closed after what was written is sent, as a transport's `close` promises."""
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending, self._pending_bytes = None, 0
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + self._pending_bytes

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingProtocol(asyncio.Protocol):
    """A server's protocol, handed a `CoalescingTransport` for its connection."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: asyncio.Protocol) -> None:
        self._protocol = protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        stream = cast(asyncio.Transport, transport)  # a TCP connection's
        coalescing = CoalescingTransport(stream, asyncio.get_running_loop())
        self._protocol.connection_made(cast(asyncio.Transport, coalescing))

    def data_received(self, data: bytes) -> None:
        self._protocol.data_received(data)

    def eof_received(self) -> bool | None:
        return self._protocol.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._protocol.connection_lost(exc)

    def pause_writing(self) -> None:
        self._protocol.pause_writing()

    def resume_writing(self) -> None:
        self._protocol.resume_writing()


class BatchAcceptServer(asyncio.AbstractServer):
    """Listening sockets whose waiting connections are all accepted in one turn."""

    def __init__(
        self,
        loop: uvloop.Loop,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        sockets: Iterable[socket.socket],
        backlog: int,
    ) -> None:
        self._loop = loop
        self._protocol_factory = protocol_factory
        self._sockets = tuple(sockets)
        self._backlog = backlog
        self._serving = False
        self._closed = asyncio.Event()
        # Connections being handed to uvloop: referenced until done, so none is collected.
        self._opening: set[asyncio.Task[Any]] = set()

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return self._sockets

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._serving

    async def start_serving(self) -> None:
        self._start()

    async def serve_forever(self) -> None:
        self._start()
        await self._closed.wait()

    def close(self) -> None:
        """Stop accepting and close the listening sockets; open connections are left to
        the server that owns them (uvicorn shuts them down gracefully)."""
        self._stop_reading()
        for sock in self._sockets:
            sock.close()
        self._closed.set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def _start(self) -> None:
        if self._serving or self._closed.is_set():
            return
        for sock in self._sockets:
            sock.listen(self._backlog)
        self._start_reading()

    def _start_reading(self) -> None:
        if self._closed.is_set():
            return
        self._serving = True
        for sock in self._sockets:
            self._loop.add_reader(sock.fileno(), self._accept, sock)

    def _stop_reading(self) -> None:
        if self._serving:
            self._serving = False
            for sock in self._sockets:
                self._loop.remove_reader(sock.fileno())

    def _accept(self, listening: socket.socket) -> None:
        for _ in range(self._backlog):
            try:
                conn, _ = listening.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:
                    raise
                logger.error(
                    "accepting connections paused for %.0f s: %s", ACCEPT_RETRY_SECONDS, exc
                )
                self._stop_reading()
                self._loop.call_later(ACCEPT_RETRY_SECONDS, self._start_reading)
                return
            conn.setblocking(False)
            task = self._loop.create_task(self._open(conn))
            self._opening.add(task)
            task.add_done_callback(self._opening.discard)

    def _coalescing_protocol(self) -> asyncio.BaseProtocol:
        protocol = self._protocol_factory()
        # A buffered protocol reads into buffers of its own: left as it is.
        return CoalescingProtocol(protocol) if isinstance(protocol, asyncio.Protocol) else protocol

    async def _open(self, conn: socket.socket) -> None:
        try:
            await self._loop.connect_accepted_socket(self._coalescing_protocol, conn)
        except OSError as exc:  # the peer went away before the transport was set up
            logger.debug("accepted connection lost before it opened: %s", exc)
            conn.close()


#: `getaddrinfo` flags that make it parse the host and port, never look them up.
_NUMERIC_ONLY = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV


class Loop(uvloop.Loop):
    """uvloop, with `BatchAcceptServer` for plain TCP servers and numeric addresses
    resolved without the resolver's thread pool."""

    async def getaddrinfo(
        self,
        host: bytes | str | None,
        port: bytes | str | int | None,
        *,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[tuple[Any, ...]]:
        """A numeric host and port answered at once (parsing them cannot block), a name
        by uvloop's resolver."""
        if host is not None:
            try:
                return socket.getaddrinfo(host, port, family, type, proto, flags | _NUMERIC_ONLY)
            except (socket.gaierror, UnicodeError):
                pass  # a name, or a named port
        return await super().getaddrinfo(
            host, port, family=family, type=type, proto=proto, flags=flags
        )

    async def create_server(  # type: ignore[override]
        self,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        host: str | None = None,
        port: int | None = None,
        *,
        sock: socket.socket | None = None,
        backlog: int = 100,
        ssl: Any = None,
        start_serving: bool = True,
        **options: Any,
    ) -> asyncio.AbstractServer:
        if ssl is not None or options or (sock is not None and sock.family == socket.AF_UNIX):
            where: dict[str, Any] = (
                {"sock": sock} if sock is not None else {"host": host, "port": port}
            )
            return await super().create_server(
                protocol_factory,
                backlog=backlog,
                ssl=ssl,
                start_serving=start_serving,
                **where,
                **options,
            )
        sockets = [sock] if sock is not None else await self._bind(host, port)
        for listening in sockets:
            listening.setblocking(False)
        server = BatchAcceptServer(self, protocol_factory, sockets, backlog)
        if start_serving:
            await server.start_serving()
        return server

    async def _bind(self, host: str | None, port: int | None) -> list[socket.socket]:
        """One listening socket per address of `host`, as asyncio binds them."""
        infos = await self.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        sockets: list[socket.socket] = []
        try:
            for family, kind, proto, _, address in dict.fromkeys(infos):
                listening = socket.socket(family, kind, proto)
                sockets.append(listening)
                listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    listening.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                listening.bind(address)
        except OSError:
            for listening in sockets:
                listening.close()
            raise
        return sockets


def new_event_loop() -> Loop:
    """The loop factory for uvicorn's `--loop` (or `UVICORN_LOOP`)."""
    return Loop()
