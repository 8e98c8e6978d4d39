"""Pages of a list that cost the same at the millionth row as at the first.

`fetch_page` serves every paged list the same way:

- keyset ("seek") pagination: the page after a `cursor` starts where the previous one
  ended, found through the index of the sort keys, instead of walking and throwing away
  `offset` rows; `offset` still works for the pages near the start;
- `total` counted exactly up to `EXACT_TOTAL_UP_TO` (a count that stops there, so it
  never walks more rows than that) and, above, PostgreSQL's planner estimate, flagged
  with `total_is_estimate`. SQLite, the local default, counts exactly.

A cursor is opaque to clients: base64 of the sort keys of the last row served, the offset
of the next page and a fingerprint of the list's filters (a cursor of another search is
refused with a 422 rather than silently answering something else).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Generic, TypeVar

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from sqlalchemy import (
    ColumnElement,
    Executable,
    ScalarSelect,
    Select,
    and_,
    bindparam,
    func,
    inspect,
    literal_column,
    or_,
    select,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import QueryableAttribute
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement

from shared.schemas import EXACT_TOTAL_UP_TO, Page, PageParams

T = TypeVar("T")
R = TypeVar("R", bound=BaseModel)


class SortKey:
    """One term of a list's order; the last ones must make the order total (an id)."""

    def __init__(
        self, expression: ColumnElement[Any] | QueryableAttribute[Any], descending: bool = True
    ) -> None:
        self.expression: ColumnElement[Any] = expression.expression
        self.descending = descending

    @property
    def clause(self) -> ColumnElement[Any]:
        return self.expression.desc() if self.descending else self.expression.asc()


@dataclass(frozen=True)
class PageResult(Generic[T]):
    items: Sequence[T]
    total: int
    total_is_estimate: bool
    offset: int
    next_cursor: str | None

    def to_page(self, read: type[R], limit: int) -> Page[R]:
        """The page envelope, each row read into `read` (a response model)."""
        page_type: type[Page[R]] = Page[read]  # type: ignore[valid-type]
        return page_type(
            items=[read.model_validate(item) for item in self.items],
            total=self.total,
            total_is_estimate=self.total_is_estimate,
            limit=limit,
            offset=self.offset,
            next_cursor=self.next_cursor,
        )


def invalid_cursor(message: str) -> RequestValidationError:
    return RequestValidationError(
        [{"loc": ("query", "cursor"), "msg": message, "type": "value_error"}]
    )


# Sort key values travel as [tag, JSON value] so that they come back with their type.
def _encode_value(value: Any) -> list[Any]:
    if isinstance(value, bool):
        return ["b", value]
    if isinstance(value, int):
        return ["i", value]
    if isinstance(value, float):
        return ["f", value]
    if isinstance(value, Decimal):
        return ["d", str(value)]
    if isinstance(value, datetime):
        return ["t", value.isoformat()]
    if isinstance(value, uuid.UUID):
        return ["u", str(value)]
    if isinstance(value, str):
        return ["s", value]
    raise TypeError(f"a sort key of type {type(value).__name__} cannot go into a cursor")


def _decode_value(tagged: Any) -> Any:
    match tagged:
        case ["b", bool() as value] | ["s", str() as value]:
            return value
        case ["i", int() as value] if not isinstance(value, bool):
            return value
        case ["f", int() | float() as value] if not isinstance(value, bool) and math.isfinite(
            value
        ):
            return float(value)
        case ["d", str() as value]:
            return Decimal(value)
        case ["t", str() as value]:
            moment = datetime.fromisoformat(value)
            if moment.tzinfo is None:
                raise ValueError("naive timestamp")
            return moment
        case ["u", str() as value]:
            return uuid.UUID(value)
    raise ValueError("unknown key")


def _fingerprint(scope: str) -> str:
    return hashlib.sha256(scope.encode()).hexdigest()[:12]


def encode_cursor(keys: Sequence[Any], offset: int, scope: str) -> str:
    document = {"k": [_encode_value(key) for key in keys], "o": offset, "s": _fingerprint(scope)}
    raw = json.dumps(document, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, *, key_count: int, scope: str) -> tuple[list[Any], int]:
    """The sort keys and offset a cursor carries; a 422 for anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        document = json.loads(raw)
        keys = [_decode_value(tagged) for tagged in document["k"]]
        offset = document["o"]
        fingerprint = document["s"]
    except (binascii.Error, ValueError, TypeError, KeyError, InvalidOperation) as error:
        raise invalid_cursor("Not a cursor this list gave out.") from error
    if len(keys) != key_count or not isinstance(offset, int) or offset < 0:
        raise invalid_cursor("Not a cursor this list gave out.")
    if fingerprint != _fingerprint(scope):
        raise invalid_cursor("This cursor belongs to a list with other filters.")
    return keys, offset


def _after(keys: Sequence[SortKey], values: Sequence[Any]) -> ColumnElement[bool]:
    """Rows that come after `values` in the order of `keys`."""
    bound = [
        bindparam(None, value, type_=key.expression.type)
        for key, value in zip(keys, values, strict=True)
    ]
    if len({key.descending for key in keys}) == 1:
        # A row-value comparison is what an index on the keys can serve as one range.
        left = tuple_(*(key.expression for key in keys))
        right = tuple_(*bound)
        return left < right if keys[0].descending else left > right
    alternatives = []
    for index, key in enumerate(keys):
        ties = [keys[i].expression == bound[i] for i in range(index)]
        beyond = key.expression < bound[index] if key.descending else key.expression > bound[index]
        alternatives.append(and_(*ties, beyond))
    return or_(*alternatives)


class Explain(Executable, ClauseElement):
    """`EXPLAIN (FORMAT JSON)` of a statement, with its parameters bound as usual."""

    # Compiled afresh each time: a cached EXPLAIN would be given the result columns of
    # the statement it explains, which it does not return.
    inherit_cache = False

    def __init__(self, statement: Select[Any]) -> None:
        self.statement = statement


@compiles(Explain, "postgresql")
def _compile_explain(element: Explain, compiler: SQLCompiler, **kw: Any) -> str:
    return "EXPLAIN (FORMAT JSON) " + compiler.process(element.statement, **kw)


async def _planner_rows(session: AsyncSession, statement: Select[Any]) -> int:
    plan = (await session.execute(Explain(statement))).scalar_one()
    if isinstance(plan, str):
        plan = json.loads(plan)
    return int(plan[0]["Plan"]["Plan Rows"])


def _counted_rows(statement: Select[Any]) -> Select[Any]:
    """The rows `statement` filters, as `SELECT 1`, without order or bounds."""
    rows: Select[Any] = statement.with_only_columns(literal_column("1"), maintain_column_froms=True)
    return rows.order_by(None).limit(None).offset(None)


def capped_count(statement: Select[Any]) -> ScalarSelect[int]:
    """How many rows `statement` selects, counted up to one more than
    `EXACT_TOTAL_UP_TO` (so it never walks more of an index than that): a scalar
    subquery, evaluated once, that a page's own statement carries as a column."""
    capped = _counted_rows(statement).limit(EXACT_TOTAL_UP_TO + 1).subquery()
    return select(func.count()).select_from(capped).correlate(None).scalar_subquery()


class _Estimates:
    """Planner estimates of large lists, remembered for `SECONDS` per database, list and
    filters.

    An estimate (`total_is_estimate`) is a figure from PostgreSQL's statistics, which
    only ANALYZE moves; asking the planner again for every page cost a round trip and a
    plan (the first page of 100,000 products made three statements instead of one)."""

    SECONDS = 10.0
    SIZE = 512

    def __init__(self) -> None:
        self._known: OrderedDict[tuple[str, str, str], tuple[float, int]] = OrderedDict()

    def get(self, key: tuple[str, str, str]) -> int | None:
        found = self._known.get(key)
        if found is None or found[0] < time.monotonic():
            return None
        return found[1]

    def put(self, key: tuple[str, str, str], rows: int) -> None:
        self._known[key] = (time.monotonic() + self.SECONDS, rows)
        self._known.move_to_end(key)
        while len(self._known) > self.SIZE:
            self._known.popitem(last=False)


_estimates = _Estimates()


async def _estimated_total(session: AsyncSession, statement: Select[Any], scope: str) -> int:
    """PostgreSQL's planner estimate of the rows of `statement` (from its statistics:
    no scan), never less than what a capped count found."""
    # The list's table(s) and filters (get_final_froms() compiles the ORM statement:
    # 0.5 ms, a fifth of a page's CPU).
    tables = ",".join(str(table.description) for table in statement.columns_clause_froms)
    key = (str(session.get_bind().engine.url), tables, scope)
    rows = _estimates.get(key)
    if rows is None:
        rows = await _planner_rows(session, _counted_rows(statement))
        _estimates.put(key, rows)
    return max(rows, EXACT_TOTAL_UP_TO + 1)


async def count_total(
    session: AsyncSession, statement: Select[Any], scope: str = ""
) -> tuple[int, bool]:
    """How many rows `statement` selects, and whether that is an estimate.

    Exact up to `EXACT_TOTAL_UP_TO`: the count stops one row later, so it costs the same
    however large the table. Above, PostgreSQL's planner estimate; SQLite counts exactly."""
    capped = await session.scalar(select(capped_count(statement)))
    return await _total(session, statement, capped or 0, scope)


async def _total(
    session: AsyncSession, statement: Select[Any], capped: int, scope: str
) -> tuple[int, bool]:
    """The total of a list whose capped count came out `capped`, and whether it is an
    estimate."""
    if capped <= EXACT_TOTAL_UP_TO:
        return capped, False
    if session.get_bind().dialect.name == "postgresql":
        return await _estimated_total(session, statement, scope), True
    # SQLite (local runs, small tables): an exact count is cheap enough.
    total = await session.scalar(
        select(func.count()).select_from(_counted_rows(statement).subquery())
    )
    return total or 0, False


def _narrowed(statement: Select[Any]) -> Select[Any]:
    """`statement` selecting only the primary key of its entity, filters kept."""
    mapper = inspect(statement.column_descriptions[0]["entity"])
    (primary_key,) = mapper.primary_key
    return statement.with_only_columns(primary_key, maintain_column_froms=True)


def _with_full_rows(
    statement: Select[Any], ranked: Select[Any], order_by: Sequence[SortKey]
) -> Select[Any]:
    """The page's full rows, joined to `ranked` (primary key, sort keys, maybe a count).

    A sort that reads every match (a relevance sort: 3,334 products for "keyboard" in a
    100,000-product catalog) costs by the width of the rows it carries; sorting the keys
    alone and looking up the page's rows after took that query from 11.8 to 9.6 ms of
    PostgreSQL's CPU."""
    entity = statement.column_descriptions[0]["entity"]
    (primary_key,) = inspect(entity).primary_key
    page = ranked.subquery("ranked")
    identity, *rest = page.c
    sort_columns = rest[: len(order_by)]
    return (
        select(entity, *rest)
        .join(page, primary_key == identity)
        .order_by(
            *(
                column.desc() if key.descending else column.asc()
                for column, key in zip(sort_columns, order_by, strict=True)
            )
        )
    )


async def fetch_page(
    session: AsyncSession,
    statement: Select[T],
    *,
    order_by: Sequence[SortKey],
    page: PageParams,
    scope: str = "",
    sorts_every_match: bool = False,
) -> PageResult[T]:
    """One page of `statement` (a select of one entity or column, with its filters) in
    the order of `order_by`, from `page.offset` or after `page.cursor`.

    `scope` names the filters (the same text for the same list): a cursor works only
    with the filters it was made for. `sorts_every_match` says that no index gives the
    order (a relevance sort), so the database looks at every match for the page anyway:
    it then counts them in the same query, exactly and for free, and sorts narrow rows
    (`statement` must then select one mapped entity, looked up by its primary key)."""
    keys = [key.expression for key in order_by]
    keyed = (_narrowed(statement) if sorts_every_match else statement).add_columns(*keys)
    offset = page.offset
    if page.cursor is not None:
        values, offset = decode_cursor(page.cursor, key_count=len(order_by), scope=scope)
        keyed = keyed.where(_after(order_by, values))
    else:
        keyed = keyed.offset(page.offset)
    # The total comes with the page, in the same statement: every match's count when
    # they are all ranked anyway (only the first page of a relevance sort: after a
    # cursor its rows are fewer), else a capped count of the filtered rows.
    exact_in_page = sorts_every_match and page.cursor is None
    keyed = keyed.add_columns(func.count().over() if exact_in_page else capped_count(statement))
    # One row more than the page tells whether there is a next page, without a count.
    keyed = keyed.order_by(*(key.clause for key in order_by)).limit(page.limit + 1)
    if sorts_every_match:
        keyed = _with_full_rows(statement, keyed, order_by)
    rows: Sequence[Any] = (await session.execute(keyed)).all()
    if not rows and (offset or page.cursor is not None):
        # Past the end: no row carried the count. (At the start, no row means none.)
        total, is_estimate = await count_total(session, statement, scope)
    elif not rows:
        total, is_estimate = 0, False
    elif exact_in_page:
        total, is_estimate = rows[0][-1], False
    else:
        total, is_estimate = await _total(session, statement, rows[0][-1], scope)
    next_cursor = None
    if len(rows) > page.limit:
        rows = rows[: page.limit]
        next_cursor = encode_cursor(rows[-1][1 : 1 + len(keys)], offset + page.limit, scope)
    return PageResult([row[0] for row in rows], total, is_estimate, offset, next_cursor)
