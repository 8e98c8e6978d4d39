"""The process's database engine: pooled connections the server closed are replaced
without a failed request, and every statement and commit is counted."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text

from service_testing import postgres_database
from shared.db import Database


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
