"""The outbox relay against a real RabbitMQ: what is committed is published, once the
broker confirmed it, and is never lost while the broker or the producer is down."""

from __future__ import annotations

import asyncio
import gc
import json
import re
import time
from typing import TYPE_CHECKING, Any

import aio_pika
import pytest

from eventbus import Broker, OutboxRelay, RelayThread, add_event
from eventbus.broker import declare_exchange
from eventbus.metrics import EVENT_PUBLISH_FAILURES, EVENTS_PUBLISHED, OUTBOX_BACKLOG
from eventbus.outbox import OUTBOX
from service_testing import eventually
from shared.db import utcnow

if TYPE_CHECKING:
    from aio_pika.abc import AbstractChannel, AbstractQueue

    from conftest import Harness
    from service_testing import RabbitMQNode

pytestmark = pytest.mark.rabbitmq


async def probe_queue(harness: Harness) -> tuple[AbstractChannel, AbstractQueue]:
    """A private queue that sees every message the relay publishes."""
    connection = await harness.broker.connection()
    channel = await connection.channel()
    exchange = await declare_exchange(connection, channel, harness.topology)
    probe = await channel.declare_queue(exclusive=True)
    await probe.bind(exchange, "#")
    return channel, probe


async def stage_many(harness: Harness, count: int, prefix: str) -> None:
    async with harness.database.sessionmaker() as session:
        for number in range(count):
            await add_event(session, "thing.changed", {"note": f"{prefix}{number}"}, "test_service")
        await session.commit()


class TestPublishing:
    async def test_a_committed_event_reaches_the_consumer_once(self, harness: Harness) -> None:
        await harness.start(harness.consumer())
        await harness.start(harness.relay())
        published_before = EVENTS_PUBLISHED.labels("thing.happened")._value.get()

        envelope = await harness.stage("hello")

        await eventually(lambda: harness.effects("hello"), message="not consumed")
        await eventually(lambda: harness.pending_is(0), message="not marked published")
        await asyncio.sleep(0.3)  # room for a duplicate to show up, were there one
        assert await harness.effects("hello") == 1
        [row] = await harness.outbox_rows()
        assert row.id == envelope.id
        assert row.published_at is not None
        assert row.published_at >= row.occurred_at
        assert row.attempts == 0
        assert EVENTS_PUBLISHED.labels("thing.happened")._value.get() == published_before + 1

    async def test_the_message_has_the_contract_properties(self, harness: Harness) -> None:
        channel, probe = await probe_queue(harness)
        envelope = await harness.stage("props")
        [row] = await harness.outbox_rows()

        assert await harness.relay().publish_pending() == 1

        message = await probe.get(timeout=5, no_ack=True)
        await channel.close()
        assert message.message_id == str(envelope.id)
        assert message.content_type == "application/json"
        assert message.type == "thing.happened"
        assert message.routing_key == "thing.happened"
        assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert message.app_id == "test_service"
        assert message.headers["traceparent"] == row.traceparent
        assert len(row.traceparent) == 55
        assert row.traceparent.startswith("00-")
        body = json.loads(message.body)
        assert body == {
            "id": str(envelope.id),
            "type": "thing.happened",
            "occurred_at": body["occurred_at"],
            "source": "test_service",
            "version": 1,
            "data": {"note": "props"},
        }
        assert body["occurred_at"].endswith("Z")

    async def test_many_events_go_out_in_batches_all_confirmed(self, harness: Harness) -> None:
        await stage_many(harness, 250, "n")
        await harness.start(harness.consumer())
        relay = harness.relay(batch_size=100)

        assert [await relay.publish_pending() for _ in range(4)] == [100, 100, 50, 0]

        await eventually(lambda: harness.effects_are(250), message="not all consumed")
        assert await harness.pending() == 0

    async def test_a_rolled_back_transaction_publishes_nothing(self, harness: Harness) -> None:
        async with harness.database.sessionmaker() as session:
            await add_event(session, "thing.happened", {"note": "never"}, "test_service")
            await session.rollback()

        assert await harness.outbox_rows() == []

    async def test_a_commit_wakes_the_relay_before_its_next_poll(self, harness: Harness) -> None:
        await harness.start(harness.consumer())
        await harness.start(harness.relay(poll_seconds=30))
        await asyncio.sleep(0.2)  # the relay now waits out its 30 s poll

        await harness.stage("woken")

        await eventually(lambda: harness.pending_is(0), within=5, message="the relay slept on")

    async def test_events_committed_within_the_linger_leave_in_one_pass(
        self, harness: Harness
    ) -> None:
        await harness.start(harness.consumer())
        relay = harness.relay(poll_seconds=30, linger_seconds=0.5)
        passes: list[int] = []
        publish_pending = relay.publish_pending

        async def counted() -> int:
            passes.append(await publish_pending())
            return passes[-1]

        relay.publish_pending = counted  # type: ignore[method-assign]
        await harness.start(relay)
        await asyncio.sleep(0.2)  # past the first pass; the relay now waits out its poll
        passes.clear()

        await harness.stage("created")
        await asyncio.sleep(0.1)
        await harness.stage("confirmed")

        await eventually(lambda: harness.pending_is(0), within=5, message="not published")
        assert passes == [2]

    async def test_a_batch_waiting_for_its_confirms_does_not_hold_up_the_next(
        self, harness: Harness
    ) -> None:
        if harness.database.backend != "postgresql":
            pytest.skip("row locks are PostgreSQL's: on SQLite one batch is out at a time")
        first_out, confirm_first = asyncio.Event(), asyncio.Event()

        class SlowFirstConfirm(OutboxRelay):
            async def _publish(self, exchange: Any, rows: Any) -> Any:
                if not first_out.is_set():
                    first_out.set()
                    await confirm_first.wait()  # the broker is slow to confirm it
                return await super()._publish(exchange, rows)

        await harness.start(harness.consumer())
        relay = SlowFirstConfirm(
            harness.database,
            harness.broker,
            harness.topology,
            service="test_service",
            poll_seconds=30,
        )
        await harness.start(relay)
        await harness.stage("first")
        async with asyncio.timeout(10):
            await first_out.wait()

        await harness.stage("second")

        await eventually(
            lambda: harness.effects("second"), message="the second waited for the first"
        )
        assert await harness.effects("first") == 0
        confirm_first.set()
        await eventually(lambda: harness.effects_are(2))
        await eventually(lambda: harness.pending_is(0))


class TestRelayThread:
    async def test_events_go_out_while_the_services_loop_is_busy(self, harness: Harness) -> None:
        relay = RelayThread(
            harness.database,
            harness.broker,
            harness.topology,
            service="test_service",
            poll_seconds=30,  # so the commit is what wakes it
        )
        await relay.start()
        try:
            await harness.stage("busy")
            # The service's loop runs nothing else meanwhile, like a burst of requests:
            # a relay on that loop could not take a step.
            time.sleep(5)  # noqa: ASYNC251 - blocking the loop is the point
            busy_until = utcnow()

            [row] = await harness.outbox_rows()
            assert row.published_at is not None, "the relay waited for the loop"
            assert row.published_at < busy_until
        finally:
            await relay.stop()

    async def test_every_commit_of_a_burst_is_published_without_waiting_for_a_poll(
        self, harness: Harness
    ) -> None:
        relay = RelayThread(
            harness.database,
            harness.broker,
            harness.topology,
            service="test_service",
            poll_seconds=60,  # only the commits' wake-ups make it publish
        )
        await relay.start()
        try:
            for number in range(30):
                await harness.stage(f"burst{number}")
                if number % 7 == 0:
                    await asyncio.sleep(0.05)  # some land while a batch is out

            await eventually(lambda: harness.pending_is(0), message="a wake-up was lost")
        finally:
            await relay.stop()

    async def test_stopped_it_publishes_nothing_more_and_starts_again(
        self, harness: Harness
    ) -> None:
        await harness.start(harness.consumer())
        relay = RelayThread(
            harness.database, harness.broker, harness.topology, service="test_service"
        )
        await relay.start()
        await relay.stop()

        await harness.stage("after stop")
        await asyncio.sleep(0.5)
        assert await harness.pending() == 1
        await relay.start()
        try:
            await eventually(lambda: harness.effects("after stop"))
            await eventually(lambda: harness.pending_is(0))
        finally:
            await relay.stop()


class TestBrokerDown:
    async def test_a_failed_first_connection_is_closed_where_it_was_made(self) -> None:
        """Not left open for the garbage collector: aio-pika's `__del__` would close it on
        the loop of whichever thread collects it, the service's loop for the relay
        thread's attempts (a RuntimeError there: "attached to a different loop")."""
        broker = Broker("amqp://guest:guest@127.0.0.1:1/", name="nowhere", reconnect_seconds=60)
        gc.disable()  # the attempt lives in reference cycles: keep it to look at
        try:
            await broker.start()
            await asyncio.sleep(0.5)  # the first attempt is refused at once
            await broker.close()
            attempts = [
                connection
                for connection in gc.get_objects()
                if isinstance(connection, aio_pika.RobustConnection) and connection.url.port == 1
            ]
        finally:
            gc.enable()
        assert attempts
        assert all(connection.is_closed for connection in attempts)

    async def test_close_ends_an_attempt_that_swallowed_its_cancellation(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A close that lands in an attempt which turns the cancellation into an error:
        the connecting loop took it for "not reachable yet" and went on for ever."""
        attempting = asyncio.Event()

        async def swallowing(*args: Any, **kwargs: Any) -> Any:
            attempting.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                raise ConnectionError("the attempt was cut short") from None

        monkeypatch.setattr(aio_pika, "connect_robust", swallowing)
        broker = Broker("amqp://guest:guest@127.0.0.1:1/", name="nowhere")
        await broker.start()
        await attempting.wait()

        async with asyncio.timeout(5):
            await broker.close()
        assert not broker.is_connected

    async def test_an_attempt_the_broker_never_answers_is_given_up_and_retried(self) -> None:
        """A broker that accepts TCP and then says nothing (hung, or a half-open path):
        the first attempt waited for its handshake for ever, logging nothing and never
        trying again."""
        # The writers kept too: one collected would close its connection, an answer of sorts.
        attempts: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            attempts.append((reader, writer))

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        broker = Broker(
            f"amqp://guest:guest@127.0.0.1:{port}/",
            name="silent",
            reconnect_seconds=0.05,
            connect_timeout_seconds=0.3,
        )
        try:
            await broker.start()
            await eventually(lambda: len(attempts) >= 3, within=10)
            assert not broker.is_connected
            # Each attempt given up was closed, not left open beside the next.
            async with asyncio.timeout(5):
                for reader, _ in attempts[:2]:
                    while await reader.read(4096):
                        pass
        finally:
            async with asyncio.timeout(5):
                await broker.close()
            for _, writer in attempts:
                writer.close()
            server.close()
            await server.wait_closed()


class TestNothingIsLost:
    async def test_an_event_nobody_subscribes_to_is_published_and_kept_for_inspection(
        self, harness: Harness
    ) -> None:
        envelope = await harness.stage("nobody listens")  # no queue is bound for it yet
        relay = harness.relay()

        assert await relay.publish_pending() == 1

        [row] = await harness.outbox_rows()
        assert row.published_at is not None
        assert row.attempts == 0
        connection = await harness.broker.connection()
        async with connection.channel() as channel:
            kept = await channel.get_queue(harness.topology.unroutable_queue)
            message = await kept.get(timeout=5)
            assert message.message_id == str(envelope.id)
            assert message.routing_key == "thing.happened"
            await message.ack()

    async def test_a_missing_alternate_exchange_is_a_fault_and_the_event_stays_pending(
        self, harness: Harness
    ) -> None:
        relay = harness.relay()
        await harness.stage("declares the topology")
        assert await relay.publish_pending() == 1
        connection = await harness.broker.connection()
        async with connection.channel() as channel:
            await channel.exchange_delete(harness.topology.unroutable_exchange)

        unroutable_before = EVENT_PUBLISH_FAILURES.labels("unroutable")._value.get()
        await harness.stage("nobody listens")
        assert await relay.publish_pending() == 0

        row = (await harness.outbox_rows())[-1]
        assert row.published_at is None
        assert row.attempts == 1
        assert row.last_error.startswith("unroutable")
        assert row.next_attempt_at > utcnow()
        assert EVENT_PUBLISH_FAILURES.labels("unroutable")._value.get() == unroutable_before + 1
        # Not due yet: the next pass leaves it alone instead of hammering the broker.
        assert await relay.publish_pending() == 0
        assert (await harness.outbox_rows())[-1].attempts == 1

        # Once a consumer has declared its queue (and the topology again), a later try
        # delivers it.
        await harness.start(harness.consumer())
        await harness.start(relay)
        await eventually(lambda: harness.effects("nobody listens"), message="never delivered")
        # The consumer may see it before the relay has marked it published.
        await eventually(lambda: harness.pending_is(0), message="still pending")

    async def test_a_broker_from_before_the_alternate_exchange_still_works_and_takes_a_policy(
        self, harness_on_own_node: Harness, rabbitmq_node: RabbitMQNode
    ) -> None:
        """A broker that has the exchange without the alternate-exchange argument refuses
        the new declaration: the relay and the consumer use the exchange as it is, and a
        policy gives it its alternate exchange without deleting anything (on the run's own
        node: policies are the broker's, not the run's)."""
        harness = harness_on_own_node
        connection = await harness.broker.connection()
        async with connection.channel() as channel:
            await channel.declare_exchange(
                harness.topology.exchange, aio_pika.ExchangeType.TOPIC, durable=True
            )
        relay = harness.relay()
        await harness.start(harness.consumer())
        await harness.stage("still delivered")
        assert await relay.publish_pending() == 1
        await eventually(lambda: harness.effects("still delivered"), message="not consumed")

        await harness.stage("nobody listens", type_="thing.unheard")
        assert await relay.publish_pending() == 0  # no alternate exchange yet: a fault

        policy = f"{harness.topology.exchange}-alternate-exchange"
        definition = json.dumps({"alternate-exchange": harness.topology.unroutable_exchange})
        pattern = f"^{re.escape(harness.topology.exchange)}$"
        ctl = rabbitmq_node.ctl
        await asyncio.to_thread(
            ctl, "set_policy", "--apply-to", "exchanges", policy, pattern, definition
        )
        try:
            await eventually(
                lambda: self._publishes(relay), within=20, message="the policy was not applied"
            )
        finally:
            await asyncio.to_thread(ctl, "clear_policy", policy)
        assert await harness.pending() == 0

    @staticmethod
    async def _publishes(relay: OutboxRelay) -> bool:
        # The unroutable row waits for its retry time: make it due again.
        async with relay.database.sessionmaker() as session:
            await session.execute(OUTBOX.update().values(next_attempt_at=utcnow()))
            await session.commit()
        return await relay.publish_pending() == 1

    async def test_an_event_committed_while_no_relay_ran_is_published_later(
        self, harness: Harness
    ) -> None:
        """The producer "died" between its commit and the publish: a relay started later
        (the restarted process, or another replica) publishes the row."""
        await harness.start(harness.consumer())
        await harness.stage("orphan")
        await asyncio.sleep(0.2)
        assert await harness.pending() == 1

        await harness.start(harness.relay())

        await eventually(lambda: harness.effects("orphan"), message="never published")
        assert await harness.pending() == 0

    async def test_events_written_while_the_broker_is_down_go_out_when_it_returns(
        self, harness_on_own_node: Harness, rabbitmq_node: RabbitMQNode
    ) -> None:
        """`rabbitmqctl stop_app` while a producer commits: the events wait, then all of
        them are delivered, each once."""
        harness = harness_on_own_node
        await harness.start(harness.consumer())
        await harness.start(harness.relay())
        await harness.stage("before")
        await eventually(lambda: harness.effects("before"), message="the broker is not working")

        await asyncio.to_thread(rabbitmq_node.stop_app)
        try:
            await eventually(
                lambda: not harness.broker.is_connected, message="connected after stop_app"
            )
            for number in range(20):
                await harness.stage(f"during{number}")
            await asyncio.sleep(1.0)
            assert await harness.pending() == 20
        finally:
            await asyncio.to_thread(rabbitmq_node.start_app)

        await eventually(lambda: harness.effects_are(21), within=60, message="events were lost")
        await eventually(lambda: harness.pending_is(0), within=30)
        await asyncio.sleep(0.3)
        assert await harness.effects() == 21

    async def test_the_backlog_is_measured(self, harness: Harness) -> None:
        for number in range(3):
            await harness.stage(f"b{number}")
        # A broker nobody answers for: the relay keeps failing, and says how far behind it is.
        unreachable = Broker("amqp://guest:guest@127.0.0.1:1/", name="nowhere")
        relay = OutboxRelay(harness.database, unreachable, harness.topology, service="test_service")

        assert (await relay.backlog())[0] == 3
        await unreachable.start()
        await harness.start(relay)
        try:
            await eventually(
                lambda: OUTBOX_BACKLOG.labels("test_service")._value.get() == 3,
                message="the backlog gauge was not set",
            )
        finally:
            await harness.stop_all()
            await unreachable.close()


@pytest.mark.postgres
async def test_replicas_publish_each_row_once(harness: Harness) -> None:
    """Two relays on one PostgreSQL outbox: `FOR UPDATE SKIP LOCKED` hands each row to
    one of them (counted at the broker, where no inbox hides a duplicate)."""
    if harness.database.backend != "postgresql":
        pytest.skip("row locks are PostgreSQL's")
    await stage_many(harness, 400, "r")
    channel, probe = await probe_queue(harness)
    first, second = harness.relay(batch_size=50), harness.relay(batch_size=50)

    async def drain(relay: OutboxRelay) -> int:
        total = 0
        while published := await relay.publish_pending():
            total += published
        return total

    counts = await asyncio.gather(drain(first), drain(second))

    assert sum(counts) == 400
    ids = []
    while (message := await probe.get(fail=False, no_ack=True)) is not None:
        ids.append(message.message_id)
    await channel.close()
    assert len(ids) == len(set(ids)) == 400
