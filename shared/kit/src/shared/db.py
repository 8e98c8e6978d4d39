"""Async SQLAlchemy: one engine per process, SQLite by default, PostgreSQL in production."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import (
    DateTime,
    Enum,
    Insert,
    MetaData,
    Numeric,
    Table,
    Update,
    bindparam,
    event,
    exists,
    insert,
    select,
    text,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect, RowMapping, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Mapped, mapped_column, registry, relationship
from sqlalchemy.types import TypeDecorator

from shared.metrics import DB_STATEMENTS, DB_TRANSACTIONS

# Constraint names that Alembic can find again (and that read well in error messages).
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite keeps NUMERIC as a float; `Money` quantizes on the way out, so this is handled.
warnings.filterwarnings("ignore", message=".*does \\*not\\* support Decimal objects natively.*")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite forgets the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use UTC")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Money(TypeDecorator[Decimal]):
    """An amount with two decimal places, exact on PostgreSQL and rounded back on SQLite."""

    impl = Numeric(12, 2)
    cache_ok = True
    _CENT = Decimal("0.01")

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(value).quantize(self._CENT)

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(str(value)).quantize(self._CENT)


#: For each service's own declarative base (one registry per service, never shared):
#:     class Base(DeclarativeBase):
#:         metadata = MetaData(naming_convention=NAMING_CONVENTION)
#:         type_annotation_map = TYPE_ANNOTATION_MAP
TYPE_ANNOTATION_MAP: dict[Any, Any] = {datetime: UTCDateTime(), Decimal: Money()}


def service_registry() -> registry:
    """A service's own ORM registry: its tables' metadata, with the naming convention,
    and the column types of `TYPE_ANNOTATION_MAP`. Each service's `models.py` says
    `class Base(DeclarativeBase): registry = service_registry()`."""
    return registry(
        metadata=MetaData(naming_convention=NAMING_CONVENTION),
        type_annotation_map=TYPE_ANNOTATION_MAP,
    )


def owned_lines(order_by: str, *, back_populates: str | None = None) -> Any:
    """The lines a row owns (an order's, a reservation's): never loaded by surprise
    (`lazy="raise"`: a missing `selectinload` fails loudly instead of a query per row),
    saved with their row, and deleted by the database's ON DELETE CASCADE."""
    return relationship(
        back_populates=back_populates,
        order_by=order_by,
        lazy="raise",
        cascade="all, delete-orphan",
        passive_deletes=True,
    )


def string_enum(enum: type[StrEnum], length: int) -> Enum:
    """A column of `enum`'s values as a VARCHAR, not a native PostgreSQL ENUM type: adding
    a value later is then a plain migration on both backends (pair it with `one_of`)."""
    return Enum(
        enum,
        native_enum=False,
        create_constraint=False,
        length=length,
        values_callable=lambda members: [member.value for member in members],
    )


def one_of(column: str, enum: type[StrEnum]) -> str:
    """A CHECK constraint's SQL: `column` holds one of `enum`'s values."""
    return f"{column} IN ({', '.join(repr(member.value) for member in enum)})"


class IdMixin:
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # A new row's updated_at is its created_at, not a second reading of the clock.
    updated_at: Mapped[datetime] = mapped_column(
        default=lambda context: context.get_current_parameters()["created_at"], onupdate=utcnow
    )


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        # WAL lets readers run beside the writer; busy_timeout waits for the lock
        # instead of failing at once when two requests write together.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=5000")
        cursor.close()


_STATEMENT_KINDS = {
    kind: DB_STATEMENTS.labels(kind) for kind in ("select", "insert", "update", "delete")
}
_OTHER_STATEMENT = DB_STATEMENTS.labels("other")
_COMMITS = DB_TRANSACTIONS.labels("commit")
_ROLLBACKS = DB_TRANSACTIONS.labels("rollback")


def _count_statements(engine: AsyncEngine) -> None:
    """Count statements and transactions: the round trips a request costs the database."""
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "before_cursor_execute")
    def _on_execute(*args: Any) -> None:
        statement: str = args[2]
        _STATEMENT_KINDS.get(statement[:6].lower(), _OTHER_STATEMENT).inc()

    @event.listens_for(sync_engine, "commit")
    def _on_commit(_connection: Any) -> None:
        _COMMITS.inc()

    @event.listens_for(sync_engine, "rollback")
    def _on_rollback(_connection: Any) -> None:
        _ROLLBACKS.inc()


def create_engine(
    url: str, *, pool_size: int = 10, max_overflow: int = 20, echo: bool = False
) -> AsyncEngine:
    """Create the process's engine; SQLite files get their folder and sane pragmas."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, echo=echo)
        _configure_sqlite(engine)
    else:
        # Every connection the pool opens is kept for the next transaction, up to
        # pool_size + max_overflow (the most it ever holds either way). SQLAlchemy closes
        # an overflow connection as soon as it is returned to a full pool, so a load just
        # above pool_size opened and closed connections all the time, each a login and
        # its setup on both sides: bench-checkout counted 0.84 opened per order.
        engine = create_async_engine(
            url,
            echo=echo,
            pool_size=pool_size + max_overflow,
            max_overflow=0,
            pool_recycle=1800,
        )
        _discard_closed_connections(engine)
    _count_statements(engine)
    return engine


def _discard_closed_connections(engine: AsyncEngine) -> None:
    """Replace a pooled connection the server has closed (a restart, an idle timeout)
    when it is checked out. asyncpg notices the closed socket by itself, so this costs
    no round trip, where `pool_pre_ping` sends a query before every transaction."""

    @event.listens_for(engine.sync_engine.pool, "checkout")
    def _on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        driver = getattr(dbapi_connection, "driver_connection", None)
        is_closed = getattr(driver, "is_closed", None)
        if is_closed is not None and is_closed():
            raise sa_exc.DisconnectionError("the server closed this pooled connection")


class Database:
    """The engine and session factory of one process, built in the lifespan."""

    def __init__(
        self, url: str, *, pool_size: int = 10, max_overflow: int = 20, echo: bool = False
    ) -> None:
        self.url = url
        self.engine = create_engine(url, pool_size=pool_size, max_overflow=max_overflow, echo=echo)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    async def ping(self) -> None:
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    @asynccontextmanager
    async def reading_alone(self) -> AsyncIterator[AsyncSession]:
        """A session whose statements each run on their own, outside a transaction
        (autocommit): for a request that only reads, and reads once or needs no common
        snapshot. On PostgreSQL a read is then one round trip, where a transaction costs
        a BEGIN and a ROLLBACK around it (two thirds of the round trips of a read by id,
        and a quarter of product_service's CPU per checkout)."""
        async with self.engine.connect() as connection:
            await connection.execution_options(isolation_level="AUTOCOMMIT")
            async with AsyncSession(connection, expire_on_commit=False) as session:
                yield session

    async def dispose(self) -> None:
        await self.engine.dispose()


def is_unique_violation(error: sa_exc.IntegrityError) -> bool:
    """True when an IntegrityError comes from a unique constraint, on SQLite or PostgreSQL."""
    message = str(error.orig).lower()
    sqlstate = getattr(error.orig, "sqlstate", None) or getattr(
        getattr(error.orig, "__cause__", None), "sqlstate", None
    )
    return sqlstate == "23505" or "unique constraint" in message or "duplicate key" in message


class GuardedWrite:
    """A guard (an INSERT or UPDATE ... RETURNING one row at most) and the writes it
    allows: rows to insert and UPDATEs to run only when the guard returned its row.
    Built once, with a bind parameter for every value that changes from one call to the
    next (`bindparam("name")` in the guard and the updates; `inserts` map each column to
    the name of its parameter), and run by `write_once` with each call's values:
    building a statement of half a dozen CTEs cost about a millisecond of CPU a time.

    On PostgreSQL it is one statement (data-modifying CTEs, each write reading the
    guard's row). Its parts run on one snapshot, so an update never sees the rows the
    inserts add or the guard changes: never point one at those."""

    def __init__(
        self,
        guard: Insert | Update,
        inserts: Sequence[tuple[Table, Mapping[str, str]]] = (),
        updates: Sequence[Update] = (),
    ) -> None:
        def value(table: Table, column: str, name: str) -> Any:
            return bindparam(name, type_=table.c[column].type)

        #: SQLite: the statements one by one, in a transaction.
        self.in_order: list[Insert | Update] = [
            guard,
            *(
                insert(table).values({c: value(table, c, n) for c, n in columns.items()})
                for table, columns in inserts
            ),
            *updates,
        ]
        guarded = guard.cte("guard")
        writes = [
            insert(table)
            .from_select(
                list(columns),
                select(*(value(table, c, n) for c, n in columns.items())).select_from(guarded),
            )
            .cte(f"insert_{index}")
            for index, (table, columns) in enumerate(inserts)
        ]
        writes += [
            statement.where(exists(select(1).select_from(guarded))).cte(f"update_{index}")
            for index, statement in enumerate(updates)
        ]
        #: PostgreSQL: one statement.
        self.in_one_statement = select(guarded).add_cte(*writes)
        # SQLite's statements each take only their own parameters (an INSERT or UPDATE
        # refuses names it has no use for).
        self._names = [set(statement.compile().params) for statement in self.in_order]

    def parameters_in_order(self, values: Mapping[str, Any]) -> list[dict[str, Any]]:
        return [
            {name: value for name, value in values.items() if name in names}
            for names in self._names
        ]


async def write_once(
    session: AsyncSession, write: GuardedWrite, values: Mapping[str, Any]
) -> RowMapping | None:
    """Run `write` with `values` (its parameters by name) as one committed transaction:
    the guard's row, or None, nothing written, when the guard returned none.

    On PostgreSQL this is `write.in_one_statement` sent in autocommit: one round trip,
    where a transaction of the same statements costs a BEGIN, one each and a COMMIT (an
    order's checkout was 15 round trips from order_service alone). A single statement is
    atomic and its commit as durable as any other. On SQLite the same statements run one
    by one in a transaction. The session must have no transaction open; it is committed
    (its `after_commit` hooks, such as the outbox relay's wake-up, run as usual)."""
    if session.in_transaction():
        raise RuntimeError("write_once needs a session without an open transaction")
    try:
        if session.get_bind().dialect.name == "postgresql":
            await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
            result = await session.execute(write.in_one_statement, dict(values))
            row = result.mappings().first()
        else:
            row = await _write_in_order(session, write, values)
    except BaseException:
        # Never leave the session on an autocommit connection for its next statements.
        await session.rollback()
        raise
    if row is None:
        await session.rollback()
    else:
        await session.commit()
    return row


async def _write_in_order(
    session: AsyncSession, write: GuardedWrite, values: Mapping[str, Any]
) -> RowMapping | None:
    guard, *writes = zip(write.in_order, write.parameters_in_order(values), strict=True)
    found = (await session.execute(*guard)).mappings().first()
    if found is None:
        return None
    for statement, parameters in writes:
        await session.execute(statement, parameters)
    return found
