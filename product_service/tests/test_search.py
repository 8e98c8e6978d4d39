"""Catalog search that ranks, and pages by cursor, on both backends alike."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy import event, insert, text
from sqlalchemy.ext.asyncio import AsyncEngine

from product_service import search
from product_service.models import Product
from service_testing import assert_problem
from shared.db import utcnow

MakeProduct = Callable[..., Awaitable[dict[str, Any]]]


async def skus(client: AsyncClient, **params: Any) -> list[str]:
    response = await client.get("/v1/products", params=params)
    assert response.status_code == 200, response.text
    return [item["sku"] for item in response.json()["items"]]


async def walk(client: AsyncClient, **params: Any) -> list[dict[str, Any]]:
    """Every page of a list, following `next_cursor`."""
    pages = [(await client.get("/v1/products", params=params)).json()]
    while "next_cursor" in pages[-1]:
        response = await client.get(
            "/v1/products", params={**params, "cursor": pages[-1]["next_cursor"]}
        )
        assert response.status_code == 200, response.text
        pages.append(response.json())
    return pages


@pytest.fixture
async def keyboards(make_product: MakeProduct) -> None:
    """A small shop; created oldest first, so `newest first` would list them backwards."""
    await make_product(sku="KB-TKL", name="Keyboard", description="Tenkeyless.")
    await make_product(sku="KB-MECH", name="Mechanical Keyboard", description="Brown switches.")
    await make_product(sku="WRIST-1", name="Wrist rest", description="Soft rest for any keyboard.")
    await make_product(sku="MSE-1", name="Wireless Mouse", description="Ergonomic.")
    await make_product(sku="KB-COVER", name="Keyboard cover", description="Keeps dust out.")


@contextmanager
def statements_of(engine: AsyncEngine) -> Iterator[list[str]]:
    """The SQL statements `engine` runs inside the block for the catalog (not the outbox
    relay's, which runs beside the requests)."""
    seen: list[str] = []

    def record(_connection: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "outbox_event" not in statement:
            seen.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


class TestRelevance:
    @pytest.mark.usefixtures("keyboards")
    async def test_exact_name_first_then_names_then_descriptions(self, client: AsyncClient) -> None:
        found = await skus(client, q="keyboard")

        assert found[0] == "KB-TKL"
        assert set(found[1:3]) == {"KB-MECH", "KB-COVER"}
        assert found[3] == "WRIST-1"
        assert "MSE-1" not in found

    @pytest.mark.usefixtures("keyboards")
    async def test_exact_sku_comes_first(self, client: AsyncClient) -> None:
        assert (await skus(client, q="kb-cover"))[0] == "KB-COVER"

    @pytest.mark.usefixtures("keyboards")
    @pytest.mark.parametrize("q", ["keybord", "keyboad", "mechanicl keybord", "KEYBORD"])
    async def test_misspelled_words_find_keyboards(self, client: AsyncClient, q: str) -> None:
        found = await skus(client, q=q)

        assert "KB-MECH" in found
        assert "MSE-1" not in found

    @pytest.mark.usefixtures("keyboards")
    @pytest.mark.parametrize(
        ("q", "expected"),
        [
            ("keyboards", {"KB-TKL", "KB-MECH", "KB-COVER", "WRIST-1"}),  # stemming
            ("switch", {"KB-MECH"}),  # "switches"
            ("keyboard -mechanical", {"KB-TKL", "KB-COVER", "WRIST-1"}),
            ('"keyboard cover"', {"KB-COVER"}),
            ("mouse or cover", {"MSE-1", "KB-COVER"}),
            ("zzzz", set()),
            ("the", set()),  # a stop word alone is no search
            ("-mouse", set()),  # nor are exclusions alone
            ("keyboard -the -mechanical", {"KB-TKL", "KB-COVER", "WRIST-1"}),
        ],
    )
    async def test_reads_q_like_a_search_box(
        self, client: AsyncClient, q: str, expected: set[str]
    ) -> None:
        assert set(await skus(client, q=q)) == expected

    @pytest.mark.usefixtures("keyboards")
    async def test_filters_still_apply_to_a_search(
        self, client: AsyncClient, make_product: MakeProduct
    ) -> None:
        await make_product(sku="KB-CHEAP", name="Keyboard", price="5.00", category="budget")

        assert await skus(client, q="keyboard", category="budget") == ["KB-CHEAP"]
        assert await skus(client, q="keyboard", max_price="6") == ["KB-CHEAP"]

    async def test_inactive_products_are_not_found(
        self, client: AsyncClient, make_product: MakeProduct, admin: dict[str, str]
    ) -> None:
        product = await make_product(sku="KB-OLD", name="Keyboard")
        await client.delete(f"/v1/products/{product['id']}", headers=admin)

        assert await skus(client, q="keyboard") == []
        assert await skus(client, q="keybord") == []


class TestCursorPaging:
    async def test_cursor_walk_equals_the_offset_walk(
        self, client: AsyncClient, make_product: MakeProduct
    ) -> None:
        for _ in range(7):
            await make_product()
        by_offset = [
            item["id"]
            for offset in range(0, 7, 3)
            for item in (
                await client.get("/v1/products", params={"limit": 3, "offset": offset})
            ).json()["items"]
        ]

        pages = await walk(client, limit=3)

        assert [item["id"] for page in pages for item in page["items"]] == by_offset
        assert [page["offset"] for page in pages] == [0, 3, 6]
        assert [page["total"] for page in pages] == [7, 7, 7]
        assert "next_cursor" not in pages[-1]
        assert all("total_is_estimate" not in page for page in pages)

    async def test_pages_stay_stable_while_products_are_added(
        self, client: AsyncClient, make_product: MakeProduct
    ) -> None:
        original = [await make_product() for _ in range(6)]
        first = (await client.get("/v1/products", params={"limit": 2})).json()

        added = [await make_product() for _ in range(3)]  # newer: they sort before the cursor
        rest = await walk(client, limit=2, cursor=first["next_cursor"])

        seen = [item["id"] for page in [first, *rest] for item in page["items"]]
        assert seen == [product["id"] for product in reversed(original)]
        assert not {product["id"] for product in added} & set(seen)

    @pytest.mark.usefixtures("keyboards")
    async def test_cursor_walk_of_a_search_keeps_its_order(self, client: AsyncClient) -> None:
        whole = await skus(client, q="keyboard", limit=100)

        pages = await walk(client, q="keyboard", limit=1)

        assert [item["sku"] for page in pages for item in page["items"]] == whole
        assert len(pages) == len(whole) == 4

    @pytest.mark.parametrize("cursor", ["x", "eyJrIjpbXX0", "!!!", "e30", "a" * 1024])
    async def test_garbage_cursor_is_a_422(
        self, client: AsyncClient, make_product: MakeProduct, cursor: str
    ) -> None:
        response = await client.get("/v1/products", params={"cursor": cursor})

        body = assert_problem(response, 422)
        assert body["errors"][0]["loc"] == ["query", "cursor"]

    async def test_too_long_cursor_is_a_422(self, client: AsyncClient) -> None:
        assert_problem(await client.get("/v1/products", params={"cursor": "a" * 1025}), 422)

    async def test_cursor_of_another_search_is_a_422(
        self, client: AsyncClient, make_product: MakeProduct
    ) -> None:
        for _ in range(3):
            await make_product(name="Blue mug")
        cursor = (await client.get("/v1/products", params={"limit": 1})).json()["next_cursor"]

        response = await client.get("/v1/products", params={"q": "mug", "cursor": cursor})

        assert_problem(response, 422)

    async def test_cursor_and_offset_together_is_a_422(self, client: AsyncClient) -> None:
        response = await client.get("/v1/products", params={"cursor": "abc", "offset": 5})

        assert_problem(response, 422)


class TestLargeCatalogTotal:
    async def test_total_above_ten_thousand_is_flagged_as_estimate_on_postgresql(
        self, app: FastAPI, client: AsyncClient, make_product: MakeProduct
    ) -> None:
        await make_product(sku="RARE-1", name="Rare teapot", category="rare")
        now = utcnow()
        rows = [
            {
                "id": uuid.uuid4(),
                "sku": f"BULK-{n:05d}",
                "name": f"Bulk item {n}",
                "description": "",
                "price": Decimal("1.00"),
                "currency": "USD",
                "category": "bulk",
                "created_at": now,
                "updated_at": now,
            }
            for n in range(10_050)
        ]
        database = app.state.database
        async with database.engine.begin() as connection:
            await connection.execute(insert(Product), rows)
            if database.backend == "postgresql":
                await connection.execute(text("ANALYZE product"))

        await client.get("/v1/products")  # the second time is served from cached SQL
        page = (await client.get("/v1/products")).json()
        rare = (await client.get("/v1/products", params={"category": "rare"})).json()

        if database.backend == "postgresql":
            assert page["total_is_estimate"] is True
            assert 10_001 <= page["total"] <= 20_000
        else:  # SQLite, the local default, counts exactly
            assert "total_is_estimate" not in page
            assert page["total"] == 10_051
        assert len(page["items"]) == 20
        assert (rare["total"], "total_is_estimate" in rare) == (1, False)
        with statements_of(database.engine) as statements:
            again = (await client.get("/v1/products")).json()
        assert again["total"] == page["total"]
        if database.backend == "postgresql":
            # Rows and capped count in one statement; the planner's estimate remembered.
            assert len(statements) == 1, statements


class TestOneStatementPerPage:
    """A page's rows and its total come from one statement (a round trip)."""

    @pytest.mark.usefixtures("keyboards")
    @pytest.mark.parametrize(
        "params",
        [
            {},
            {"q": "keyboard"},
            {"category": "misc", "max_price": "50"},
            {"q": "keybord"},
            {"q": "zzzz"},
        ],
    )
    async def test_page_and_total_in_one_statement(
        self, app: FastAPI, client: AsyncClient, params: dict[str, str]
    ) -> None:
        everything = await skus(client, **params, limit=100)

        with statements_of(app.state.database.engine) as statements:
            page = (await client.get("/v1/products", params={**params, "limit": 2})).json()

        assert page["total"] == len(everything)
        assert [item["sku"] for item in page["items"]] == everything[:2]
        assert len(statements) == 1, statements

    @pytest.mark.usefixtures("keyboards")
    @pytest.mark.parametrize("params", [{}, {"q": "keyboard"}])
    async def test_total_of_a_page_past_the_end(
        self, client: AsyncClient, params: dict[str, str]
    ) -> None:
        everything = await skus(client, **params, limit=100)

        page = (await client.get("/v1/products", params={**params, "offset": 50})).json()

        assert (page["items"], page["total"]) == ([], len(everything))

    @pytest.mark.usefixtures("keyboards")
    async def test_total_of_a_page_after_a_cursor(self, client: AsyncClient) -> None:
        first = (await client.get("/v1/products", params={"q": "keyboard", "limit": 1})).json()

        second = (
            await client.get(
                "/v1/products", params={"q": "keyboard", "cursor": first["next_cursor"]}
            )
        ).json()

        assert second["total"] == first["total"] == 4
        assert len(second["items"]) == 3


class TestSearchRules:
    """The rules SQLite runs in Python give PostgreSQL's pg_trgm figures."""

    @pytest.mark.parametrize(
        ("needle", "haystack", "expected"),
        [
            ("keybord", "Mechanical Keyboard", 0.625),
            ("keyboards", "Keyboard", 0.8),
            ("keyb", "Mechanical Keyboard", 0.8),
            ("red keybord", "Red Mechanical Keyboard", 5 / 12),
            ("nothing like it", "PCT_100 Gift card misc 100% off nothing", 0.5),
            ("mse", "MSE-002 misc", 1.0),
            ("%", "anything", 0.0),
        ],
    )
    def test_word_similarity_is_pg_trgms(self, needle: str, haystack: str, expected: float) -> None:
        assert search.word_similarity(needle, haystack) == pytest.approx(expected)

    def test_the_rules_may_run_on_many_threads_at_once(self) -> None:
        # SQLite calls them from each of its connections' threads (aiosqlite) at once.
        def rank_many(_: int) -> list[float]:
            return [
                search.rank(
                    "generous keyboards",
                    "KB-1",
                    "Mechanical Keyboards",
                    "electronics",
                    "Clicky, generously sized keys for long typing sessions",
                )
                for _ in range(300)
            ]

        with ThreadPoolExecutor(max_workers=4) as pool:
            ranks = list(pool.map(rank_many, range(8)))

        assert all(rank == ranks[0] for rank in ranks)


class TestTyposAgainstTheCatalogsWords:
    """PostgreSQL corrects a misspelt word against the catalog's words (`catalog_word`,
    kept by triggers), not against the text of every product."""

    @pytest.fixture(autouse=True)
    def _postgresql_only(self, backend: str) -> None:
        if backend != "postgresql":
            pytest.skip("SQLite compares each product's text in Python")

    async def test_words_of_new_and_changed_products_are_known(
        self, app: FastAPI, client: AsyncClient, make_product: MakeProduct, admin: dict[str, str]
    ) -> None:
        product = await make_product(sku="ZP-1", name="Zeppelin Teapot", description="Brass.")
        await client.patch(
            f"/v1/products/{product['id']}", json={"name": "Dirigible Teapot"}, headers=admin
        )

        async with app.state.database.engine.connect() as connection:
            known = set(
                (
                    await connection.execute(
                        text("SELECT word FROM catalog_word WHERE word = ANY(:words)"),
                        {"words": ["zeppelin", "dirigible", "teapot", "brass", "zp", "1"]},
                    )
                ).scalars()
            )
        assert known == {"zeppelin", "dirigible", "teapot", "brass", "zp"}  # no bare numbers
        assert await skus(client, q="dirigable") == ["ZP-1"]
        assert await skus(client, q="zepelin") == []  # no product is named so any more

    async def test_plan_looks_words_and_exact_names_up_by_index(
        self, app: FastAPI, client: AsyncClient
    ) -> None:
        await _bulk_products(app, 5_000)

        plans = {q: await _plan_of_search(app, client, q) for q in ("keyboard", "keybord")}

        for q, plan in plans.items():
            assert "ix_product_active_lower_name" in plan, q  # exact names found by index
            assert "catalog_word" in plan, q  # typos corrected against the words
            # The trigram index serves the substring match only, never a typo.
            assert not [line for line in plan.splitlines() if "%>" in line and "sku" in line], q


async def _bulk_products(app: FastAPI, count: int) -> None:
    """`count` active products, one in ten a keyboard, added in one statement."""
    now = utcnow()
    nouns = ["keyboard", "lamp", "mug", "chair", "desk", "pen", "fan", "tent", "pan", "clock"]
    rows = [
        {
            "id": uuid.uuid4(),
            "sku": f"BULK-{n:05d}",
            "name": f"Bulk {nouns[n % 10]} {n}",
            "description": f"A {nouns[n % 10]}.",
            "price": Decimal("1.00"),
            "currency": "USD",
            "category": "bulk",
            "created_at": now,
            "updated_at": now,
        }
        for n in range(count)
    ]
    async with app.state.database.engine.begin() as connection:
        await connection.execute(insert(Product), rows)
        await connection.execute(text("ANALYZE product"))
        await connection.execute(text("ANALYZE catalog_word"))


async def _plan_of_search(app: FastAPI, client: AsyncClient, q: str) -> str:
    """PostgreSQL's plan (EXPLAIN, text) of the statement a search page runs."""
    engine = app.state.database.engine
    with statements_of(engine) as statements:
        parameters: list[Any] = []
        event.listen(
            engine.sync_engine,
            "before_cursor_execute",
            record := lambda _c, _cur, _st, params, *_: parameters.append(params),
        )
        try:
            response = await client.get("/v1/products", params={"q": q})
        finally:
            event.remove(engine.sync_engine, "before_cursor_execute", record)
    assert response.status_code == 200, response.text
    assert response.json()["total"] >= 500
    async with engine.connect() as connection:
        rows = await connection.exec_driver_sql(f"EXPLAIN {statements[0]}", parameters[0])
        return "\n".join(row[0] for row in rows)
