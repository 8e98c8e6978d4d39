"""The transactional outbox: an event is a row written in the same transaction as the
change it reports, so it exists exactly when the change does. The relay
(`eventbus.relay`) publishes the rows afterwards.

Each producing service adds the table to its own metadata (so Alembic and the test
helpers see it) and stages events with `add_event`:

    # models.py
    outbox_event = outbox_table(Base.metadata)

    # service.py, inside the business transaction
    await add_event(session, PRODUCT_CREATED, ProductChanged(...), source="product_service")
    await session.commit()
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Column, Index, Integer, MetaData, String, Table, Text, Uuid, event, insert
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from eventbus.envelope import EventEnvelope
from shared.db import NAMING_CONVENTION, UTCDateTime
from shared.tracing import outgoing_traceparent

# The one definition; `outbox_table` copies it into a service's metadata. Statements
# built on it run against any of the copies (same name, same columns).
_metadata = MetaData(naming_convention=NAMING_CONVENTION)

OUTBOX = Table(
    "outbox_event",
    _metadata,
    Column("id", Uuid(), primary_key=True),
    Column("type", String(100), nullable=False),
    #: The whole envelope as JSON, published byte for byte.
    Column("payload", Text(), nullable=False),
    Column("occurred_at", UTCDateTime(), nullable=False),
    Column("traceparent", String(55), nullable=True),
    Column("published_at", UTCDateTime(), nullable=True),
    Column("attempts", Integer(), nullable=False, default=0, server_default="0"),
    Column("last_error", Text(), nullable=True),
    #: A row that failed on its own (unroutable, refused) waits until then; NULL: now.
    Column("next_attempt_at", UTCDateTime(), nullable=True),
    # The relay's query (pending rows, oldest first) and the purge of old published rows.
    Index("ix_outbox_event_published_at_occurred_at", "published_at", "occurred_at"),
)

_STAGED = "eventbus.outbox_staged"


def outbox_table(metadata: MetaData) -> Table:
    """Add the `outbox_event` table to a service's metadata (once) and return it."""
    existing = metadata.tables.get(OUTBOX.name)
    return existing if existing is not None else OUTBOX.to_metadata(metadata)


async def add_event(
    session: AsyncSession,
    type: str,
    data: BaseModel | Mapping[str, Any],
    source: str,
    *,
    traceparent: str | None = None,
) -> EventEnvelope:
    """Stage an event in the session's transaction; it is published after the commit
    (and never, if the transaction rolls back). The caller commits."""
    envelope = EventEnvelope.new(type, data, source=source)
    await session.execute(insert(OUTBOX).values(outbox_row(envelope, traceparent=traceparent)))
    mark_staged(session)
    return envelope


def outbox_row(envelope: EventEnvelope, *, traceparent: str | None = None) -> dict[str, Any]:
    """The outbox row of `envelope`, for a caller that writes it in a statement of its own
    (`shared.db.write_once`) instead of `add_event`; it calls `mark_staged` too."""
    return {
        "id": envelope.id,
        "type": envelope.type,
        "payload": envelope.to_json(),
        "occurred_at": envelope.occurred_at,
        "traceparent": traceparent or outgoing_traceparent(),
        "attempts": 0,
    }


def mark_staged(session: AsyncSession) -> None:
    """Wake the relay after the session's next commit: it wrote an outbox row."""
    session.info[_STAGED] = True


# --- waking the relay after a commit ---------------------------------------------------

_wakeups: weakref.WeakKeyDictionary[Engine, set[Callable[[], None]]] = weakref.WeakKeyDictionary()


def on_outbox_commit(engine: AsyncEngine, callback: Callable[[], None]) -> Callable[[], None]:
    """Call `callback` after each commit, through `engine`, of a session that staged an
    event (the relay wakes up instead of waiting for its next poll). Returns the
    function that stops it."""
    callbacks = _wakeups.setdefault(engine.sync_engine, set())
    callbacks.add(callback)
    return lambda: callbacks.discard(callback)


@event.listens_for(Session, "after_commit")
def _wake_relays(session: Session) -> None:
    if not session.info.pop(_STAGED, False):
        return
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine
    for callback in tuple(_wakeups.get(engine, ())):
        callback()


@event.listens_for(Session, "after_rollback")
def _forget_staged(session: Session) -> None:
    session.info.pop(_STAGED, None)
