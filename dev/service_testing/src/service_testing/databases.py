"""Throw-away databases: a fresh PostgreSQL database per run, migrated with a service's
Alembic, emptied between tests."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
from sqlalchemy import MetaData, text
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.migrations import upgrade

#: Where the integration suite finds PostgreSQL (scripts/ensure-postgres.sh makes this role).
POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql://shop:shop@127.0.0.1:5432/postgres"
)


def _asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


@asynccontextmanager
async def postgres_database(prefix: str) -> AsyncIterator[str]:
    """Create a fresh PostgreSQL database and drop it afterwards; yields its SQLAlchemy URL."""
    name = f"test_{prefix}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(_asyncpg_dsn(POSTGRES_ADMIN_URL))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    try:
        # The server is on the loopback: TLS would only cost a handshake per connection.
        yield f"{base}/{name}?ssl=disable"
    finally:
        admin = await asyncpg.connect(_asyncpg_dsn(POSTGRES_ADMIN_URL))
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@asynccontextmanager
async def migrated_database(
    backend: str, service: str, alembic_ini: Path, tmp_dir: Path
) -> AsyncIterator[str]:
    """A database of `backend` ("sqlite" or "postgresql") migrated with the service's Alembic."""
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_dir / f'{service}.db'}"
        await asyncio.to_thread(upgrade, alembic_ini, url)
        yield url
        return
    async with postgres_database(service) as url:
        await asyncio.to_thread(upgrade, alembic_ini, url)
        yield url


async def truncate_all(engine: AsyncEngine, metadata: MetaData) -> None:
    """Empty every table between tests (far cheaper than migrating a database per test)."""
    tables = [table.name for table in reversed(metadata.sorted_tables)]
    async with engine.begin() as connection:
        if engine.dialect.name == "postgresql":
            await connection.execute(text(f"TRUNCATE {', '.join(tables)} CASCADE"))
        else:
            for table in tables:
                await connection.execute(text(f"DELETE FROM {table}"))  # noqa: S608 - our own names
