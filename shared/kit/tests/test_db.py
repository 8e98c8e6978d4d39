"""The process's database engine: every statement and commit is counted."""

from __future__ import annotations

from prometheus_client import REGISTRY
from sqlalchemy import text

from shared.db import Database


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


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
