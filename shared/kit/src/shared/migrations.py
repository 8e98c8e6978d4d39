"""Alembic glue: every service's `migrations/env.py` is two lines that call `run_migrations`."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData, pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from shared.db import create_engine


def run_migrations(target_metadata: MetaData, default_url: str) -> None:
    """Run inside env.py. The URL comes from `alembic_config.attributes["database_url"]`
    (tests), `-x database_url=...` (command line) or the service's settings."""
    config = context.config
    url = (
        config.attributes.get("database_url")
        or context.get_x_argument(as_dictionary=True).get("database_url")
        or default_url
    )
    if context.is_offline_mode():
        context.configure(
            url=url,
            target_metadata=target_metadata,
            literal_binds=True,
            render_as_batch=url.startswith("sqlite"),
        )
        with context.begin_transaction():
            context.run_migrations()
        return

    def migrate(connection: Connection) -> None:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()

    async def run() -> None:
        engine = (
            create_engine(url)  # creates the SQLite folder and sets its pragmas
            if url.startswith("sqlite")
            else create_async_engine(url, poolclass=pool.NullPool)
        )
        try:
            async with engine.connect() as connection:
                await connection.run_sync(migrate)
        finally:
            await engine.dispose()

    asyncio.run(run())


def upgrade(alembic_ini: Path, database_url: str, revision: str = "head") -> None:
    """Migrate `database_url` to `revision` (blocking: call it in a thread from async code)."""
    config = Config(str(alembic_ini))
    config.set_main_option("script_location", str(alembic_ini.parent / "migrations"))
    config.attributes["database_url"] = database_url
    command.upgrade(config, revision)
