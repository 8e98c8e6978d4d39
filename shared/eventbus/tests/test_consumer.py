"""The consumer against a real RabbitMQ: each event id takes effect once, whatever the
broker redelivers, and a message that cannot be processed ends in the dead-letter queue
after a bounded number of tries without holding up the others."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import event

from eventbus import (
    MAX_DELIVERIES,
    Broker,
    EventConsumer,
    EventEnvelope,
    EventHandlers,
    Topology,
)
from eventbus.dlq import list_dead_letters, replay_dead_letters
from eventbus.metrics import EVENTS_CONSUMED, EVENTS_DEAD_LETTERED
from service_testing import RABBITMQ_URL, eventually
from shared.db import Database
from shared.metrics import DB_TRANSACTIONS

if TYPE_CHECKING:
    from aio_pika.abc import AbstractIncomingMessage

    from conftest import Harness

pytestmark = pytest.mark.rabbitmq

SERVICE = "listener"


def envelope_json(note: str, *, event_id: uuid.UUID | None = None, **overrides: Any) -> bytes:
    envelope = {
        "id": str(event_id or uuid.uuid4()),
        "type": "thing.happened",
        "occurred_at": datetime.now(UTC).isoformat(),
        "source": "test_service",
        "version": 1,
        "data": {"note": note},
        **overrides,
    }
    return json.dumps(envelope).encode()


def consumed(outcome: str, type_: str = "thing.happened") -> float:
    value: float = EVENTS_CONSUMED.labels(type_, outcome)._value.get()
    return value


def commits() -> float:
    value: float = DB_TRANSACTIONS.labels("commit")._value.get()
    return value


@pytest.fixture
def savepoints(database: Database) -> Iterator[Callable[[], int]]:
    """How many savepoints were taken on the database since the test began."""
    taken: list[str] = []

    def record(*args: Any) -> None:
        if args[2].upper().startswith("SAVEPOINT"):
            taken.append(args[2])

    event.listen(database.engine.sync_engine, "before_cursor_execute", record)
    yield lambda: len(taken)
    event.remove(database.engine.sync_engine, "before_cursor_execute", record)


async def queued_while_stopped(harness: Harness, bodies: list[bytes]) -> None:
    """Put `bodies` in the consumer's queue while no consumer runs (they are handed out
    together when one starts)."""
    await harness.start(harness.consumer())  # declares and binds the queue
    await harness.stop_all()
    for body in bodies:
        await harness.publish_raw(body)


class TestBatches:
    async def test_a_backlog_is_handled_in_a_few_transactions_not_one_per_event(
        self, harness: Harness
    ) -> None:
        await queued_while_stopped(harness, [envelope_json(f"e{n}") for n in range(40)])
        commits_before = commits()

        await harness.start(harness.consumer(prefetch=64, batch_size=32))

        await eventually(lambda: harness.effects_are(40))
        assert harness.handler_calls == 40
        # One transaction per event would be 40 commits; a batch takes whatever has
        # arrived, so how they split varies, but never into one each.
        assert commits() - commits_before <= 10

    async def test_events_arriving_within_the_linger_share_a_transaction(
        self, harness: Harness, database: Database
    ) -> None:
        inbox_writes: list[str] = []

        def record(_connection: Any, _cursor: Any, statement: str, *_: Any) -> None:
            if statement.lstrip().upper().startswith("INSERT INTO INBOX_EVENT"):
                inbox_writes.append(statement)

        await harness.start(harness.consumer(linger_seconds=0.5))
        event.listen(database.engine.sync_engine, "before_cursor_execute", record)
        try:
            await harness.publish_raw(envelope_json("first"))
            await asyncio.sleep(0.1)
            await harness.publish_raw(envelope_json("second"))
            await eventually(lambda: harness.effects_are(2))
        finally:
            event.remove(database.engine.sync_engine, "before_cursor_execute", record)

        # One batch: one inbox statement (and one commit) for both.
        assert len(inbox_writes) == 1

    async def test_a_lone_event_is_handled_once_its_linger_ends(self, harness: Harness) -> None:
        await harness.start(harness.consumer(linger_seconds=0.3))
        started = asyncio.get_running_loop().time()

        await harness.publish_raw(envelope_json("alone"))

        # Nothing waits for the batch to fill: it closes when the linger ends.
        await eventually(lambda: harness.effects_are(1), within=5)
        assert asyncio.get_running_loop().time() - started >= 0.3

    async def test_an_event_alone_in_its_batch_costs_no_savepoint(
        self, harness: Harness, database: Database
    ) -> None:
        consumer = harness.consumer()
        statements: list[str] = []

        def record(*args: Any) -> None:
            statements.append(args[2])

        event.listen(database.engine.sync_engine, "before_cursor_execute", record)
        try:
            assert await consumer.process(
                EventEnvelope.new("thing.happened", {"note": "alone"}, source="t")
            )
        finally:
            event.remove(database.engine.sync_engine, "before_cursor_execute", record)

        assert await harness.effects("alone") == 1
        assert not [s for s in statements if "SAVEPOINT" in s.upper()], statements

    async def test_a_failing_event_in_a_batch_leaves_the_others_committed_once(
        self, harness: Harness, savepoints: Callable[[], int]
    ) -> None:
        harness.fail_notes.add("bad")
        notes = ["a", "b", "bad", "c", "d"]
        await queued_while_stopped(harness, [envelope_json(note) for note in notes])

        await harness.start(harness.consumer())

        await eventually(lambda: harness.dead_letters_are(1), message="not dead-lettered")
        assert await harness.effects() == 4
        assert await harness.effects("bad") == 0
        for note in ("a", "b", "c", "d"):
            assert await harness.effects(note) == 1
        # The batch with the bad event was rolled back and run again, a savepoint each.
        assert savepoints() > 0

    async def test_a_batch_whose_handlers_all_succeed_takes_no_savepoint(
        self, harness: Harness, savepoints: Callable[[], int]
    ) -> None:
        await queued_while_stopped(harness, [envelope_json(f"s{n}") for n in range(20)])

        await harness.start(harness.consumer(prefetch=64, batch_size=32))

        await eventually(lambda: harness.effects_are(20))
        assert harness.handler_calls == 20
        assert savepoints() == 0

    async def test_a_handler_with_external_effects_never_runs_again_for_a_neighbour(
        self, harness: Harness
    ) -> None:
        harness.fail_notes.add("bad")
        notes = ["a", "b", "bad", "c", "d"]
        await queued_while_stopped(
            harness, [envelope_json(note, type="thing.sent") for note in notes]
        )

        await harness.start(harness.consumer())

        await eventually(lambda: harness.dead_letters_are(1), message="not dead-lettered")
        assert await harness.effects() == 4
        assert await harness.effects("bad") == 0
        # Each good event ran once (the ones after the first in a savepoint), the bad one
        # once per delivery: nothing was run again because a neighbour failed.
        assert harness.handler_calls == 4 + MAX_DELIVERIES

    async def test_a_batch_redelivered_after_a_crash_before_its_acks_takes_effect_once(
        self, harness: Harness, database: Database, topology: Topology
    ) -> None:
        committed = asyncio.Event()
        settled = 0

        class DiesBeforeAck(EventConsumer):
            async def _settle(
                self, settling: Awaitable[object], message: AbstractIncomingMessage
            ) -> None:
                nonlocal settled
                getattr(settling, "close", lambda: None)()  # the ack never happens
                settled += 1
                if settled == 20:
                    committed.set()

        await queued_while_stopped(harness, [envelope_json(f"crash{n}") for n in range(20)])
        dying_broker = Broker(RABBITMQ_URL, name="dies-before-ack")
        await dying_broker.start()
        dying = DiesBeforeAck(database, dying_broker, topology, harness.handlers, service=SERVICE)
        await harness.start(dying)
        async with asyncio.timeout(15):
            await committed.wait()
        assert await harness.effects() == 20
        duplicates_before = consumed("duplicate")
        # The process dies: its connection goes, and the unacknowledged batch goes back.
        await dying_broker.close()
        await harness.start(harness.consumer())

        await eventually(lambda: consumed("duplicate") == duplicates_before + 20)
        assert await harness.effects() == 20
        assert harness.handler_calls == 20


class TestOnce:
    async def test_a_duplicate_delivery_takes_effect_once(self, harness: Harness) -> None:
        await harness.start(harness.consumer())
        duplicates_before = consumed("duplicate")
        event_id = uuid.uuid4()

        for _ in range(3):  # a producer that published the same event three times
            await harness.publish_raw(envelope_json("twice", event_id=event_id))

        await eventually(lambda: consumed("duplicate") == duplicates_before + 2)
        assert await harness.effects("twice") == 1

    async def test_a_consumer_killed_after_commit_before_ack_does_not_apply_it_twice(
        self, harness: Harness, database: Database, topology: Topology
    ) -> None:
        committed = asyncio.Event()

        class DiesBeforeAck(EventConsumer):
            async def _settle(
                self, settling: Awaitable[object], message: AbstractIncomingMessage
            ) -> None:
                getattr(settling, "close", lambda: None)()  # the ack never happens
                committed.set()

        dying_broker = Broker(RABBITMQ_URL, name="dies-before-ack")
        await dying_broker.start()
        dying = DiesBeforeAck(database, dying_broker, topology, harness.handlers, service=SERVICE)
        await harness.start(dying)
        duplicates_before = consumed("duplicate")

        await harness.publish_raw(envelope_json("once"))
        async with asyncio.timeout(10):
            await committed.wait()
        assert await harness.effects("once") == 1
        # The process dies: its connection goes, and the unacknowledged message goes back.
        await dying_broker.close()
        await harness.start(harness.consumer())

        await eventually(lambda: consumed("duplicate") == duplicates_before + 1)
        assert await harness.effects("once") == 1
        assert harness.handler_calls == 1

    async def test_the_handler_runs_in_the_events_trace(self, harness: Harness) -> None:
        await harness.start(harness.consumer())
        await harness.start(harness.relay())

        await harness.stage("traced")

        await eventually(lambda: harness.effects("traced"))
        [row] = await harness.outbox_rows()
        assert harness.seen_traceparents == [row.traceparent]


class TestBindings:
    async def test_a_retired_type_is_no_longer_routed_to_the_queue(self, harness: Harness) -> None:
        async def drop(session: Any, event: EventEnvelope) -> None:
            return None

        handle = harness.handlers.get("thing.happened")
        assert handle is not None
        harness.handlers.on("thing.retired")(drop)  # the version before took it
        await harness.start(harness.consumer())
        await harness.stop_all()
        upgraded = EventHandlers()
        upgraded.on("thing.happened")(handle)
        upgraded.retire("thing.retired")
        harness.handlers = upgraded
        await harness.start(harness.consumer())
        dropped_before = consumed("unhandled", "thing.retired")

        retired = envelope_json("retired", type="thing.retired")
        await harness.publish_raw(retired, routing_key="thing.retired")
        await harness.publish_raw(envelope_json("after"))

        # In queue order: had the retired type still been bound, it would have been
        # delivered (and dropped as unhandled) before the event that follows it.
        await eventually(lambda: harness.effects_are(1))
        assert consumed("unhandled", "thing.retired") == dropped_before
        assert upgraded.retired == ("thing.retired",)


class TestStopping:
    async def test_stop_ends_a_setup_that_swallowed_its_cancellation(
        self, harness: Harness, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A stop that lands while the queue is being set up: aio-pika turned that
        cancellation into an error, which the retry loop took for a broker fault, and the
        consumer went on for ever (an app's shutdown hung)."""
        connection = await harness.broker.connection()
        opening = asyncio.Event()

        class SwallowsCancellation:
            def __getattr__(self, name: str) -> Any:
                return getattr(connection, name)

            async def channel(self, *args: Any, **kwargs: Any) -> Any:
                opening.set()
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    raise RuntimeError("the channel closed while it opened") from None

        async def swallowing() -> Any:
            return SwallowsCancellation()

        monkeypatch.setattr(harness.broker, "connection", swallowing)
        consumer = harness.consumer()
        await consumer.start()
        await opening.wait()

        async with asyncio.timeout(5):
            await consumer.stop()
        assert not consumer.consuming.is_set()


class TestDeadLetters:
    @pytest.mark.parametrize(
        "body",
        [
            b"{not json",
            b"[]",
            envelope_json("v2", version=2),
            envelope_json("no type", type=None),
        ],
        ids=["bad-json", "not-an-object", "unknown-version", "missing-type"],
    )
    async def test_a_message_that_is_not_an_event_goes_to_the_dlq_at_once(
        self, harness: Harness, body: bytes
    ) -> None:
        await harness.start(harness.consumer())
        unparseable_before = EVENTS_DEAD_LETTERED.labels("unparseable")._value.get()

        await harness.publish_raw(body, message_id="poison")
        await harness.publish_raw(envelope_json("after the poison"))

        await eventually(lambda: harness.effects("after the poison"))
        await eventually(lambda: harness.dead_letters_are(1))
        assert harness.handler_calls == 1
        assert EVENTS_DEAD_LETTERED.labels("unparseable")._value.get() == unparseable_before + 1

    async def test_a_handler_that_keeps_failing_sends_the_event_to_the_dlq_and_the_queue_flows(
        self, harness: Harness
    ) -> None:
        harness.fail_notes.add("poison")
        await harness.start(harness.consumer())
        failed_before = EVENTS_DEAD_LETTERED.labels("failed")._value.get()

        await harness.publish_raw(envelope_json("poison"))
        for number in range(5):
            await harness.publish_raw(envelope_json(f"good{number}"))

        await eventually(lambda: harness.dead_letters_are(1), message="not dead-lettered")
        assert await harness.effects() == 5
        assert await harness.effects("poison") == 0
        # Tried on each of its deliveries (twice in one that shared a batch: the batch
        # runs again with savepoints to find the culprit), then no more; the good events
        # took effect once each, whichever batches they shared with it.
        tries = harness.calls_by_note["poison"]
        assert MAX_DELIVERIES <= tries <= 2 * MAX_DELIVERIES
        assert EVENTS_DEAD_LETTERED.labels("failed")._value.get() == failed_before + 1
        await asyncio.sleep(0.3)
        assert harness.calls_by_note["poison"] == tries  # no loop

    async def test_events_wait_out_a_database_outage_without_spending_their_tries(
        self, harness: Harness, database: Database, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        async def unreachable() -> None:
            raise ConnectionRefusedError("the database is down")

        harness.fail_notes.add("outage")  # every statement fails...
        monkeypatch.setattr(database, "ping", unreachable)  # ...and so does the ping
        await harness.start(harness.consumer())

        await harness.publish_raw(envelope_json("outage"))

        await eventually(lambda: harness.handler_calls > MAX_DELIVERIES, message="gave up")
        assert await harness.dead_letters() == 0
        harness.fail_notes.clear()  # the database is back
        monkeypatch.undo()
        await eventually(lambda: harness.effects("outage"), message="never processed")
        assert await harness.dead_letters() == 0

    async def test_dead_letters_can_be_listed_and_replayed_once_fixed(
        self, harness: Harness
    ) -> None:
        harness.fail_notes.add("needs a fix")
        await harness.start(harness.consumer())
        event_id = uuid.uuid4()
        await harness.publish_raw(
            envelope_json("needs a fix", event_id=event_id),
            message_id=str(event_id),
            type="thing.happened",
        )
        await eventually(lambda: harness.dead_letters_are(1))

        [entry] = await list_dead_letters(RABBITMQ_URL, harness.topology, SERVICE, 10)
        assert entry["message_id"] == str(event_id)
        assert entry["routing_key"] == "thing.happened"
        assert entry["reason"] == "rejected"
        assert entry["queue"] == harness.topology.queue(SERVICE)
        assert json.loads(entry["body"])["id"] == str(event_id)
        assert await harness.dead_letters() == 1  # listing took nothing away

        harness.fail_notes.clear()  # the fix is deployed
        assert await replay_dead_letters(RABBITMQ_URL, harness.topology, SERVICE) == 1

        await eventually(lambda: harness.effects("needs a fix"))
        assert await harness.dead_letters() == 0

    async def test_the_command_line_lists_and_replays(self, harness: Harness) -> None:
        harness.fail_notes.add("cli")
        await harness.start(harness.consumer())
        await harness.publish_raw(envelope_json("cli"), message_id="cli-1", type="thing.happened")
        await eventually(lambda: harness.dead_letters_are(1))
        env = {
            **os.environ,
            "RABBITMQ_URL": RABBITMQ_URL,
            "EVENTS_EXCHANGE": harness.topology.exchange,
            "EVENTS_QUEUE_PREFIX": harness.topology.queue_prefix,
        }

        listed = await run_dlq(env, "list", "--service", SERVICE)
        harness.fail_notes.clear()
        replayed = await run_dlq(env, "replay", "--service", SERVICE)

        assert [json.loads(line)["message_id"] for line in listed.splitlines()] == ["cli-1"]
        assert json.loads(replayed.splitlines()[0]) == {
            "message_id": "cli-1",
            "replayed_to": "thing.happened",
        }
        await eventually(lambda: harness.effects("cli"))


async def run_dlq(env: dict[str, str], *args: str) -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "eventbus.dlq",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    return stdout.decode()
