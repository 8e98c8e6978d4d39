"""The process's database engine: pooled connections the server closed are replaced
without a failed request, every statement and commit is counted, and `write_once` writes
all or nothing in one statement on PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import asyncpg
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    bindparam,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from service_testing import postgres_database
from shared.db import Database, GuardedWrite, write_once


@pytest.fixture
async def postgres() -> AsyncIterator[Database]:
    async with postgres_database("db_pool") as url:
        database = Database(url, pool_size=1, max_overflow=0)
        try:
            yield database
        finally:
            await database.dispose()


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.postgres
class TestPooledConnections:
    async def test_a_connection_the_server_closed_is_replaced(self, postgres: Database) -> None:
        async with postgres.engine.connect() as connection:
            pid = (await connection.execute(text("select pg_backend_pid()"))).scalar_one()
        # What a server restart or an idle-session timeout does to the pooled connection.
        admin = await asyncpg.connect(postgres.url.replace("+asyncpg", "").split("?")[0])
        try:
            assert await admin.fetchval("select pg_terminate_backend($1, 5000)", pid)
        finally:
            await admin.close()
        await asyncio.sleep(0.1)  # the closed socket's end reaches the event loop

        async with postgres.engine.connect() as connection:
            new_pid = (await connection.execute(text("select pg_backend_pid()"))).scalar_one()
        assert new_pid != pid


@pytest.mark.postgres
class TestReadingAlone:
    """`Database.reading_alone`: each statement its own transaction, no BEGIN around."""

    @staticmethod
    async def _two_moments(session: AsyncSession) -> tuple[object, object]:
        """now() (the start of the transaction) for two statements 10 ms apart."""
        first = (await session.execute(text("select now()"))).scalar_one()
        await asyncio.sleep(0.01)
        second = (await session.execute(text("select now()"))).scalar_one()
        return first, second

    async def test_each_statement_is_its_own_transaction(self, postgres: Database) -> None:
        async with postgres.reading_alone() as session:
            first, second = await self._two_moments(session)
        assert first != second

        async with postgres.sessionmaker() as session:
            first, second = await self._two_moments(session)
        assert first == second

    async def test_the_pooled_connection_goes_back_transactional(self, postgres: Database) -> None:
        async with postgres.reading_alone() as session:
            await session.execute(text("select 1"))
        # The pool holds one connection: the same one, in a transaction again.
        async with postgres.sessionmaker() as session:
            first, second = await self._two_moments(session)
            level = (await session.execute(text("show transaction_isolation"))).scalar_one()
        assert first == second
        assert level == "read committed"


class TestCounting:
    async def test_statements_and_commits_are_counted(self, tmp_path: object) -> None:
        database = Database(f"sqlite+aiosqlite:///{tmp_path}/count.db")
        try:
            selects = _sample("db_statements_total", kind="select")
            inserts = _sample("db_statements_total", kind="insert")
            commits = _sample("db_transactions_total", outcome="commit")
            async with database.sessionmaker() as session:
                await session.execute(text("create table thing (id integer primary key)"))
                await session.execute(text("insert into thing (id) values (1)"))
                await session.execute(text("select id from thing"))
                await session.commit()
            assert _sample("db_statements_total", kind="select") - selects == 1
            assert _sample("db_statements_total", kind="insert") - inserts == 1
            assert _sample("db_transactions_total", outcome="commit") - commits == 1
        finally:
            await database.dispose()


_metadata = MetaData()
_counter = Table(
    "counter",
    _metadata,
    Column("name", String(20), primary_key=True),
    Column("value", Integer(), nullable=False),
)
_entry = Table(
    "entry", _metadata, Column("id", Integer(), primary_key=True), Column("note", String(20))
)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def database(request: pytest.FixtureRequest, tmp_path: object) -> AsyncIterator[Database]:
    async with AsyncExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite+aiosqlite:///{tmp_path}/write_once.db"
        else:
            url = await stack.enter_async_context(postgres_database("write_once"))
        # One connection: what one call leaves on it, the next one gets.
        database = Database(url, pool_size=1, max_overflow=0)
        stack.push_async_callback(database.dispose)
        async with database.engine.begin() as connection:
            await connection.run_sync(_metadata.create_all)
            await connection.execute(
                insert(_counter), [{"name": "stock", "value": 1}, {"name": "sold", "value": 0}]
            )
        yield database


def _statements() -> float:
    kinds = ("select", "insert", "update", "delete", "other")
    return sum(_sample("db_statements_total", kind=kind) for kind in kinds)


#: Take a unit while there is one left (returning what is left), then note it and count
#: it sold.
TAKE_NOTE_AND_COUNT = GuardedWrite(
    update(_counter)
    .where(_counter.c.name == "stock", _counter.c.value >= 1)
    .values(value=_counter.c.value - 1)
    .returning(_counter.c.value),
    [(_entry, {"id": "entry_id", "note": "entry_note"})],
    [
        update(_counter)
        .where(_counter.c.name == "sold")
        .values(value=_counter.c.value + bindparam("sold_units"))
    ],
)


async def _state(database: Database) -> tuple[int, list[str | None]]:
    """Units left in stock, and the notes."""
    async with database.engine.connect() as connection:
        stock = (
            await connection.execute(select(_counter.c.value).where(_counter.c.name == "stock"))
        ).scalar_one()
        notes = (await connection.execute(select(_entry.c.note).order_by(_entry.c.id))).scalars()
        return stock, list(notes)


class TestWriteOnce:
    async def test_writes_everything_when_the_guard_returns_its_row(
        self, database: Database
    ) -> None:
        statements = _statements()
        async with database.sessionmaker() as session:
            values = {"entry_id": 1, "entry_note": "taken", "sold_units": 1}
            row = await write_once(session, TAKE_NOTE_AND_COUNT, values)
        sent = _statements() - statements
        assert row is not None
        assert row["value"] == 0
        assert await _state(database) == (0, ["taken"])
        async with database.engine.connect() as connection:
            sold = select(_counter.c.value).where(_counter.c.name == "sold")
            assert (await connection.execute(sold)).scalar_one() == 1
        if database.backend == "postgresql":
            assert sent == 1  # and no BEGIN or COMMIT: autocommit

    async def test_writes_nothing_when_the_guard_returns_none(self, database: Database) -> None:
        async with database.sessionmaker() as session:
            first = {"entry_id": 1, "entry_note": "a", "sold_units": 1}
            assert await write_once(session, TAKE_NOTE_AND_COUNT, first)
            second = {"entry_id": 2, "entry_note": "b", "sold_units": 1}
            assert await write_once(session, TAKE_NOTE_AND_COUNT, second) is None
        assert await _state(database) == (0, ["a"])

    async def test_a_failed_write_undoes_the_guard_and_leaves_no_autocommit_behind(
        self, database: Database
    ) -> None:
        async with database.sessionmaker() as session:
            restock = GuardedWrite(
                update(_counter)
                .where(_counter.c.name == "stock")
                .values(value=5)
                .returning(_counter.c.value),
                [(_entry, {"id": "entry_id", "note": "entry_note"})],
            )
            await write_once(session, restock, {"entry_id": 1, "entry_note": "first"})
            again = {"entry_id": 1, "entry_note": "again", "sold_units": 1}
            with pytest.raises(IntegrityError):
                await write_once(session, TAKE_NOTE_AND_COUNT, again)
            # The session's next transaction is a transaction again: rolled back, gone.
            await session.execute(insert(_entry).values(id=2, note="rolled back"))
            await session.rollback()
        assert await _state(database) == (5, ["first"])
