"""The outbox relay on an event loop of its own, in a thread of the service's process.

On the service's own loop the relay waits its turn behind every request in flight: each
of its steps (claim, publish, confirm, mark) resumes only once the loop has run
everything else that was ready, so under load a batch took seconds and the outbox fell
behind (bench-checkout: p50 5 s from commit to publish at 32 connections, the relay's
own CPU under 1%). In a thread it waits for the interpreter lock instead, which a busy
thread hands over every few milliseconds. It has its own engine and broker connection
(asyncpg and aio-pika connections belong to the loop that made them); a commit through
the service's engine that staged an event still wakes it at once. Its loop is uvloop's,
like the one uvicorn gives the service: on the stdlib loop the thread cost a fifth more
CPU per order (bench-checkout), most of its samples in socket writes and epoll calls.

    relay = RelayThread(database, broker, topology, service="order_service")
    await relay.start()  # in the lifespan
    ...
    await relay.stop()
"""

from __future__ import annotations

import asyncio
import threading
from asyncio import FIRST_COMPLETED
from collections.abc import Awaitable, Callable
from typing import Any

import uvloop

from eventbus.broker import Broker, Topology
from eventbus.outbox import on_outbox_commit
from eventbus.relay import OutboxRelay
from shared.db import Database

#: How long the relay waits for its broker connection before it starts all the same (it
#: then retries the broker by itself).
CONNECT_SECONDS = 10.0


class RelayThread:
    """An `OutboxRelay` of `service` in a thread; `options` are the relay's."""

    def __init__(
        self,
        database: Database,
        broker: Broker,
        topology: Topology,
        *,
        service: str,
        **options: Any,
    ) -> None:
        self.database = database
        self.broker = broker
        self.topology = topology
        self.service = service
        self.options = options
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._relay: OutboxRelay | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._wake_pending = False
        self._unsubscribe: Callable[[], None] = lambda: None

    async def start(self) -> None:
        if self._thread is not None:
            return
        self._ready.clear()
        self._wake_pending = False
        self._thread = threading.Thread(
            target=self._main, name=f"outbox-relay-{self.service}", daemon=True
        )
        self._thread.start()
        await asyncio.to_thread(self._ready.wait)
        self._unsubscribe = on_outbox_commit(self.database.engine, self.notify)

    def notify(self) -> None:
        """Publish now (called after a commit that staged events, on the service's loop).

        One wake-up on its way at a time: each is a write to the relay loop's pipe, and
        the relay takes every row committed before it runs anyway."""
        loop = self._loop
        if self._wake_pending or loop is None or self._relay is None or loop.is_closed():
            return
        self._wake_pending = True
        loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        # On the relay's loop. Cleared first: a commit from now on sends another.
        self._wake_pending = False
        if self._relay is not None:
            self._relay.notify()

    async def stop(self) -> None:
        if self._thread is None:
            return
        self._unsubscribe()
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            loop.call_soon_threadsafe(stopping.set)
        await asyncio.to_thread(self._thread.join)
        self._thread = None

    def _main(self) -> None:
        loop = uvloop.new_event_loop()
        try:
            loop.run_until_complete(self._serve())
            # The AMQP client closes its socket in tasks of its own, which start more as
            # they end (Close, Close-Ok, the writer): they get a few seconds to end by
            # themselves, then what is left is cancelled.
            deadline = loop.time() + 5.0
            while (leftovers := asyncio.all_tasks(loop)) and loop.time() < deadline:
                loop.run_until_complete(asyncio.wait(leftovers, timeout=deadline - loop.time()))
            for task in leftovers:
                task.cancel()
            if leftovers:
                loop.run_until_complete(asyncio.wait(leftovers, timeout=1.0))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            loop.close()

    async def _serve(self) -> None:
        # A pool for the batches out at once and the backlog gauge, no more.
        in_flight = int(self.options.get("max_in_flight", 3))
        database = Database(self.database.url, pool_size=in_flight + 1, max_overflow=0)
        broker = Broker(
            self.broker.url,
            name=f"{self.broker.name}-relay",
            reconnect_seconds=self.broker.reconnect_seconds,
            reconnect_max_seconds=self.broker.reconnect_max_seconds,
            connect_timeout_seconds=self.broker.connect_timeout_seconds,
        )
        relay = OutboxRelay(database, broker, self.topology, service=self.service, **self.options)
        self._stopping = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        try:
            await broker.start()
            self._ready.set()
            # The relay's first pass waits for the broker: started before it is
            # connected, it would pause a poll interval before its next try.
            if not await _first(broker.connection(), self._stopping.wait(), CONNECT_SECONDS):
                await relay.start()
                self._relay = relay
                await self._stopping.wait()
        finally:
            self._relay = None
            self._ready.set()  # a start that failed does not leave start() waiting
            await relay.stop()
            await broker.close()
            await database.dispose()


async def _first(work: Awaitable[object], stop: Awaitable[object], seconds: float) -> bool:
    """Wait for `work`, at most `seconds`; True when `stop` came first."""
    working, stopping = asyncio.ensure_future(work), asyncio.ensure_future(stop)
    try:
        await asyncio.wait({working, stopping}, timeout=seconds, return_when=FIRST_COMPLETED)
    finally:
        working.cancel()
        stopping.cancel()
    return stopping.done() and not stopping.cancelled()
