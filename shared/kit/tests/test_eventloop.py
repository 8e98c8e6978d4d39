"""The services' event loop takes every connection waiting to be accepted in one turn, so
a burst of new connections to a busy service is not let in one per turn of its loop."""

from __future__ import annotations

import array
import asyncio
import socket
import threading
from collections.abc import Callable, Iterable

import httpx
import uvloop
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

from service_testing import serve
from shared.eventloop import (
    FLUSH_AT_BYTES,
    UVICORN_LOOP,
    BatchAcceptServer,
    CoalescingTransport,
    new_event_loop,
)

WAITING = 50
TURNS = 10


class Counting(asyncio.Protocol):
    made: list[asyncio.BaseTransport]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made.append(transport)


async def connections_made_within(turns: int, waiting: int) -> int:
    """Connections a server has set up `turns` turns of its loop after `waiting` of them
    queued in the kernel while the loop was busy (here: blocked in this coroutine)."""
    loop = asyncio.get_running_loop()
    made: list[asyncio.BaseTransport] = []
    protocol = type("Counted", (Counting,), {"made": made})
    server = await loop.create_server(protocol, "127.0.0.1", 0, backlog=128)
    port = server.sockets[0].getsockname()[1]
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(waiting)]
    try:
        for _ in range(turns):
            await asyncio.sleep(0)
        return len(made)
    finally:
        for transport in made:
            transport.close()
        for client in clients:
            client.close()
        server.close()
        await server.wait_closed()


def run(loop_factory: Callable[[], asyncio.AbstractEventLoop], turns: int) -> int:
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(connections_made_within(turns, WAITING))


def test_a_burst_of_waiting_connections_is_accepted_at_once() -> None:
    assert run(new_event_loop, TURNS) == WAITING


def test_plain_uvloop_lets_them_in_one_per_turn() -> None:
    """Why the loop exists: were this to fail, uvloop accepts in batches again and the
    services could go back to it."""
    assert run(uvloop.new_event_loop, TURNS) <= TURNS


def answered_without_waiting(loop: asyncio.AbstractEventLoop, host: str) -> bool:
    """Whether `getaddrinfo` of `host` with no socket type (as uvloop's `sock_connect`
    asks) finishes without suspending: without a thread of the resolver's pool, which
    slow lookups of other names may all be holding."""
    lookup = loop.getaddrinfo(host, 8001)
    try:
        lookup.send(None)
    except StopIteration as done:
        answer = done.value
    else:
        lookup.close()
        return False
    assert answer == socket.getaddrinfo(host, 8001)
    return True


def test_a_numeric_address_is_resolved_at_once() -> None:
    loop = new_event_loop()
    try:
        assert answered_without_waiting(loop, "127.0.0.1")
        assert answered_without_waiting(loop, "::1")
        # A name is still the resolver's.
        assert loop.run_until_complete(loop.getaddrinfo("localhost", 80))
    finally:
        loop.close()


def test_plain_uvloop_waits_for_its_resolver_pool_even_for_one() -> None:
    """Why `Loop.getaddrinfo` exists: were this to fail, uvloop answers numeric addresses
    itself and the override could go."""
    loop = uvloop.new_event_loop()
    try:
        assert not answered_without_waiting(loop, "127.0.0.1")
    finally:
        loop.close()


async def serve_on_given_socket() -> tuple[bool, bool, bool]:
    """A server on a socket bound by its caller (as uvicorn's workers are given theirs):
    whether it is one of ours, whether it answered, and whether it refused after close."""
    loop = asyncio.get_running_loop()

    class Echo(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.transport.write(data)  # type: ignore[attr-defined]

    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    address = listening.getsockname()
    server = await loop.create_server(Echo, sock=listening, backlog=16)
    reader, writer = await asyncio.open_connection(*address)
    writer.write(b"ping")
    echoed = await reader.readexactly(4) == b"ping"
    writer.close()
    server.close()
    await server.wait_closed()
    try:
        await asyncio.open_connection(*address)
    except ConnectionRefusedError:
        refused = True
    else:
        refused = False
    return isinstance(server, BatchAcceptServer), echoed, refused


def test_a_server_on_a_given_socket_serves_and_stops_on_close() -> None:
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        assert runner.run(serve_on_given_socket()) == (True, True, True)


async def test_uvicorn_serves_an_app_on_it() -> None:
    """The loop as the services are started: `--loop shared.eventloop:new_event_loop`."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            loop = type(asyncio.get_running_loop()).__module__
            await PlainTextResponse(loop)(scope, receive, send)

    async with (
        serve(app, in_thread=True, lifespan="off", loop=UVICORN_LOOP) as url,
        httpx.AsyncClient() as client,
    ):
        answer = await client.get(url)
    assert answer.text == "shared.eventloop"


class Recording(asyncio.Transport):
    """A transport that keeps what it is asked to do, to see what `CoalescingTransport`
    passes on and when."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, list[bytes]]] = []
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.calls.append(("write", [bytes(data)]))

    def writelines(self, lines: Iterable[bytes | bytearray | memoryview]) -> None:
        self.calls.append(("writelines", [bytes(line) for line in lines]))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.calls.append(("close", []))
        self.closing = True

    def abort(self) -> None:
        self.calls.append(("abort", []))
        self.closing = True

    def get_write_buffer_size(self) -> int:
        return 0


class TestCoalescingTransport:
    async def test_what_one_turn_writes_leaves_in_one_call_at_the_next(self) -> None:
        recording = Recording()
        transport = CoalescingTransport(recording, asyncio.get_running_loop())
        transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
        transport.write(bytearray(b"body"))
        transport.write(b"")
        assert recording.calls == []
        assert transport.get_write_buffer_size() == len(b"HTTP/1.1 200 OK\r\n\r\nbody")
        await asyncio.sleep(0)
        assert recording.calls == [("writelines", [b"HTTP/1.1 200 OK\r\n\r\n", b"body"])]
        transport.write(b"next")
        await asyncio.sleep(0)
        assert recording.calls[1:] == [("writelines", [b"next"])]

    async def test_a_turn_that_writes_a_lot_sends_it_at_once(self) -> None:
        """So that the transport's flow control still holds back a producer that writes
        without yielding to the loop."""
        recording = Recording()
        transport = CoalescingTransport(recording, asyncio.get_running_loop())
        chunk = b"x" * (FLUSH_AT_BYTES // 2)
        transport.write(chunk)
        assert recording.calls == []
        transport.write(chunk)
        assert recording.calls == [("writelines", [chunk, chunk])]
        transport.write(b"tail")
        assert transport.get_write_buffer_size() == 4
        await asyncio.sleep(0)
        assert recording.calls[1:] == [("writelines", [b"tail"])]

    async def test_the_buffer_size_counts_bytes_of_any_buffer(self) -> None:
        transport = CoalescingTransport(Recording(), asyncio.get_running_loop())
        transport.write(memoryview(array.array("I", [1, 2])))  # two items, eight bytes
        assert transport.get_write_buffer_size() == 8
        await asyncio.sleep(0)
        assert transport.get_write_buffer_size() == 0

    async def test_close_sends_what_was_written_first_and_abort_does_not(self) -> None:
        loop = asyncio.get_running_loop()
        closed, aborted = Recording(), Recording()
        for recording in (closed, aborted):
            transport = CoalescingTransport(recording, loop)
            transport.write(b"last words")
            transport.close() if recording is closed else transport.abort()
            transport.write(b"after the end")
        await asyncio.sleep(0)
        assert closed.calls == [("writelines", [b"last words"]), ("close", [])]
        assert aborted.calls == [("abort", [])]


async def test_uvicorn_responses_arrive_whole_and_as_they_are_made() -> None:
    """Keep-alive requests, a large body, a stream whose first part arrives before its
    last is made, and a response that closes its connection, all through the loop."""
    second_part = threading.Event()  # the app runs on the server thread's loop
    large = b"x" * (2 * 1024 * 1024)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/large":
            await PlainTextResponse(large)(scope, receive, send)
        elif scope["path"] == "/stream":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"first;", "more_body": True})
            await asyncio.to_thread(second_part.wait, 5)
            await send({"type": "http.response.body", "body": b"second", "more_body": False})
        elif scope["path"] == "/close":
            headers = {"Connection": "close"}
            await PlainTextResponse("bye", headers=headers)(scope, receive, send)
        else:
            await PlainTextResponse(scope["path"])(scope, receive, send)

    async with (
        serve(app, in_thread=True, lifespan="off", loop=UVICORN_LOOP) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        assert [(await client.get(f"/{n}")).text for n in range(3)] == ["/0", "/1", "/2"]
        assert (await client.get("/large")).content == large
        async with client.stream("GET", "/stream") as streamed:
            parts = streamed.aiter_raw()
            first = await asyncio.wait_for(anext(parts), timeout=5)
            second_part.set()
            rest = b"".join([part async for part in parts])
        assert (first, rest) == (b"first;", b"second")
        closing = await client.get("/close")
        assert (closing.text, closing.headers["connection"]) == ("bye", "close")
