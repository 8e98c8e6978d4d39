"""SQL of the catalog."""

from __future__ import annotations

import uuid
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Float,
    Row,
    RowMapping,
    Select,
    Text,
    and_,
    bindparam,
    cast,
    column,
    false,
    func,
    literal,
    literal_column,
    or_,
    select,
    table,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from product_service import search
from product_service.models import Product
from shared.paging import PageResult, SortKey, fetch_page
from shared.schemas import PageParams

_LIKE_ESCAPE = "\\"

# The text a search looks through: written exactly as the trigram index of migration 0003
# is, so that PostgreSQL uses that index for `ILIKE` and `%>`.
_DOCUMENT = literal_column(
    "product.sku || ' ' || product.name || ' ' || product.category || ' ' || product.description",
    Text,
)
# The generated, weighted tsvector of migration 0003 (PostgreSQL only, so not mapped).
_SEARCH_VECTOR: ColumnElement[Any] = literal_column("product.search_vector")
_ENGLISH: ColumnElement[Any] = literal_column("'english'::regconfig")
# Newest first; ids break ties between rows created in the same instant.
_NEWEST_FIRST = (SortKey(Product.created_at), SortKey(Product.id))


@lru_cache(maxsize=1)
def _products_by_id() -> Select[Any]:
    """`get_many`'s statement, built once (the ids are one expanding parameter): building
    it and its cache key for every checkout cost more than running it."""
    products = Product.__table__
    return select(*products.columns).where(products.c.id.in_(bindparam("ids", expanding=True)))


def _contains_pattern(text: str) -> str:
    """A LIKE pattern matching `text` anywhere, with its wildcards taken literally."""
    for char in (_LIKE_ESCAPE, "%", "_"):
        text = text.replace(char, _LIKE_ESCAPE + char)
    return f"%{text}%"


def _tsquery(q: str) -> ColumnElement[Any]:
    """`q` parsed as a web search, once per statement.

    A subquery, evaluated once: as a plain call, PostgreSQL folds it into a constant
    only when it plans the statement for these parameters; once it keeps a generic plan
    for the prepared statement (after five runs, when that plan looks no dearer), it
    parsed `q` again for every match it checked and ranked: 15 ms of CPU instead of 8
    for the 3,334 matches of "keyboard" at 100,000 products."""
    return select(func.websearch_to_tsquery(_ENGLISH, q)).scalar_subquery()


# The catalog's words (migration 0004, PostgreSQL only), kept by triggers on `product`.
_CATALOG_WORD = table("catalog_word", column("word", Text))


def _typo_tsquery(words: Sequence[str]) -> ColumnElement[Any]:
    """A full-text query of the catalog's words that are close to `words`: each word of
    `q` becomes the words of the catalog it may be a misspelling of (pg_trgm's `%>`
    over the few thousand words of `catalog_word`, one indexed lookup each), all of
    them required; NULL, which matches nothing, when one has none.

    Matching `%>` against every product's text instead found the same products, but
    a word found in no product by full text ("keybord") had its similarity computed
    over the whole text of every candidate: 34 ms of PostgreSQL's CPU at 100,000
    products, against 5 ms this way."""
    groups: list[ColumnElement[Any]] = []
    for word in words:
        close = (
            select(func.string_agg(func.quote_literal(_CATALOG_WORD.c.word), " | ", type_=Text))
            .where(_CATALOG_WORD.c.word.op("%>", return_type=Boolean)(word))
            .scalar_subquery()
        )
        # `||` keeps a NULL (no close word), where concat() would drop it.
        groups.append(literal("(", Text) + close + literal(")", Text))
    text = groups[0]
    for group in groups[1:]:
        text = text + literal(" & ", Text) + group
    return select(func.to_tsquery(_ENGLISH, text)).scalar_subquery()


# Built once: an ORM alias made per request cost a quarter of a search's Python time.
_EXACT = Product.__table__.alias("exact_product")


def _exact(q: str) -> ColumnElement[bool]:
    """Whether a product's name or SKU is `q`, ignoring case: looked up once through the
    indexes of the lowercased name and SKU (migration 0004), then a hash lookup per
    match (lowering the name and SKU of each of 3,334 matches cost 1 ms of CPU)."""
    lowered = func.lower(q)
    return Product.id.in_(
        select(_EXACT.c.id).where(
            _EXACT.c.is_active == true(),
            or_(func.lower(_EXACT.c.name) == lowered, func.lower(_EXACT.c.sku) == lowered),
        )
    )


#: SQLite connections that have the search functions already.
_SQLITE_WITH_FUNCTIONS: weakref.WeakSet[Any] = weakref.WeakSet()


@dataclass(frozen=True)
class Relevance:
    """How one backend matches and ranks a text search (see `product_service.search`),
    and which products are an exact match.

    Made once per `q` and backend and kept for the next searches of the same text
    (SQL expressions are immutable): building them took a third of a search's Python
    time, and shoppers search the same words again and again."""

    matches: ColumnElement[bool]
    rank: ColumnElement[float]
    exact: ColumnElement[bool]

    @classmethod
    @lru_cache(maxsize=1024)
    def postgresql(cls, q: str) -> Relevance:
        query = _tsquery(q)
        typo = search.typo_words(q)
        matches = or_(
            # Only exclusions would make a tsquery that no index can serve: none then.
            _SEARCH_VECTOR.op("@@", return_type=Boolean)(query) if search.has_words(q) else false(),
            _SEARCH_VECTOR.op("@@", return_type=Boolean)(_typo_tsquery(typo)) if typo else false(),
            _DOCUMENT.ilike(_contains_pattern(q), escape=_LIKE_ESCAPE),
        )
        excluded = search.exclusions(q)
        if excluded is not None:
            # A query of negations only: checked on the rows found, never an index scan.
            without = _tsquery(excluded)
            matches = and_(matches, _SEARCH_VECTOR.op("@@", return_type=Boolean)(without))
        return cls(
            matches=matches,
            rank=cast(func.ts_rank(_SEARCH_VECTOR, query), Float),
            exact=_exact(q),
        )

    @classmethod
    @lru_cache(maxsize=1024)
    def sqlite(cls, q: str) -> Relevance:
        fields = (Product.sku, Product.name, Product.category, Product.description)
        return cls(
            matches=func.product_matches(q, *fields, type_=Boolean) == true(),
            rank=func.product_rank(q, *fields, type_=Float),
            exact=_exact(q),
        )


class ProductRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, product_id: uuid.UUID) -> Product | None:
        return await self.session.get(Product, product_id)

    async def get_many(self, product_ids: Iterable[uuid.UUID]) -> Sequence[RowMapping]:
        """The rows (every column) of the products with these ids, in no set order: the
        checkout's read, with no ORM object made of them."""
        result = await self.session.execute(_products_by_id(), {"ids": list(set(product_ids))})
        rows: Sequence[RowMapping] = result.mappings().all()
        return rows

    async def _relevance(self, q: str) -> Relevance:
        if self.session.get_bind().dialect.name == "postgresql":
            return Relevance.postgresql(q)
        # SQLite runs the rules in Python: register them on this connection once.
        connection = await (await self.session.connection()).get_raw_connection()
        driver = connection.driver_connection
        if driver is not None and driver not in _SQLITE_WITH_FUNCTIONS:
            await driver.create_function("product_matches", 5, search.matches, deterministic=True)
            await driver.create_function("product_rank", 5, search.rank, deterministic=True)
            _SQLITE_WITH_FUNCTIONS.add(driver)
        return Relevance.sqlite(q)

    async def search(
        self,
        *,
        text: str | None,
        category: str | None,
        min_price: Decimal | None,
        max_price: Decimal | None,
        page: PageParams,
    ) -> PageResult[Product]:
        """One page of the active products matching every criterion given: most
        relevant first when there is a text, else newest first."""
        conditions: list[ColumnElement[bool]] = [Product.is_active == true()]
        if category is not None:
            conditions.append(Product.category == category)
        if min_price is not None:
            conditions.append(Product.price >= min_price)
        if max_price is not None:
            conditions.append(Product.price <= max_price)
        order_by: Sequence[SortKey] = _NEWEST_FIRST
        if text is not None:
            relevance = await self._relevance(text)
            conditions.append(relevance.matches)
            order_by = (SortKey(relevance.exact), SortKey(relevance.rank), *_NEWEST_FIRST)
        scope = repr((text, category, min_price, max_price))
        return await fetch_page(
            self.session,
            select(Product).where(*conditions),
            order_by=order_by,
            page=page,
            scope=scope,
            sorts_every_match=text is not None,
        )

    async def add(self, product: Product) -> Product:
        self.session.add(product)
        await self.session.flush()
        return product

    async def update(self, product_id: uuid.UUID, values: dict[str, Any]) -> Product | None:
        """Change the given columns in one statement; None when there is no such product."""
        statement = (
            update(Product)
            .where(Product.id == product_id)
            .values(**values)
            .returning(Product)
            .execution_options(populate_existing=True)
        )
        return (await self.session.scalars(statement)).one_or_none()

    async def deactivate(self, product_id: uuid.UUID) -> Product | None:
        """Mark an active product inactive and return it; None when none was active."""
        statement = (
            update(Product)
            .where(Product.id == product_id, Product.is_active == true())
            .values(is_active=False)
            .returning(Product)
            .execution_options(populate_existing=True)
        )
        return (await self.session.scalars(statement)).one_or_none()

    async def exists(self, product_id: uuid.UUID) -> bool:
        statement = select(Product.id).where(Product.id == product_id)
        return (await self.session.scalar(statement)) is not None

    async def insert_missing(
        self, rows: Sequence[dict[str, Any]]
    ) -> Sequence[Row[uuid.UUID, str, str, Decimal, bool]]:
        """Insert the rows whose SKU is not taken yet; returns the products inserted
        (id, sku, name, price, is_active).

        `ON CONFLICT DO NOTHING` settles it in the database, so concurrent runs are safe."""
        if not rows:
            return []
        dialect = self.session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = (
            insert(Product)
            .values([{"id": uuid.uuid4(), **row} for row in rows])
            .on_conflict_do_nothing(index_elements=[Product.sku])
            .returning(Product.id, Product.sku, Product.name, Product.price, Product.is_active)
        )
        return (await self.session.execute(statement)).all()
