"""The catalog API, as clients and other services see it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from httpx import AsyncClient

from service_testing import LocalTokens, assert_problem, service_headers

MakeProduct = Callable[..., Awaitable[dict[str, Any]]]


def at(timestamp: str) -> datetime:
    """Parse an ISO 8601 timestamp, insisting that it names its (UTC) offset."""
    parsed = datetime.fromisoformat(timestamp)
    assert parsed.tzinfo is not None, timestamp
    return parsed


def error_fields(body: dict[str, Any]) -> set[str]:
    return {str(error["loc"][-1]) for error in body["errors"]}


VALID = {
    "sku": "KB-001",
    "name": "Mechanical Keyboard",
    "description": "Tenkeyless, brown switches.",
    "price": "89.00",
    "category": "Electronics",
}


class TestCreateProduct:
    async def test_admin_creates_a_product(
        self, client: AsyncClient, admin: dict[str, str]
    ) -> None:
        response = await client.post("/v1/products", json=VALID, headers=admin)

        assert response.status_code == 201, response.text
        product = response.json()
        assert uuid.UUID(product["id"])
        assert product["sku"] == "KB-001"
        assert product["name"] == "Mechanical Keyboard"
        assert product["description"] == "Tenkeyless, brown switches."
        assert product["price"] == "89.00"
        assert product["currency"] == "USD"
        assert product["category"] == "electronics"
        assert product["is_active"] is True
        assert at(product["created_at"]).utcoffset() == timedelta(0)
        assert at(product["updated_at"]) == at(product["created_at"])

        fetched = await client.get(f"/v1/products/{product['id']}")
        assert fetched.status_code == 200
        assert fetched.json() == product

    async def test_duplicate_sku_is_a_conflict(
        self, client: AsyncClient, admin: dict[str, str]
    ) -> None:
        assert (await client.post("/v1/products", json=VALID, headers=admin)).status_code == 201

        again = await client.post(
            "/v1/products", json={**VALID, "name": "Another keyboard"}, headers=admin
        )

        body = assert_problem(again, 409)
        assert "KB-001" in body["detail"]
        listed = await client.get("/v1/products")
        assert listed.json()["total"] == 1

    async def test_customer_is_forbidden(
        self, client: AsyncClient, customer: dict[str, str]
    ) -> None:
        response = await client.post("/v1/products", json=VALID, headers=customer)

        assert_problem(response, 403)
        assert (await client.get("/v1/products")).json()["total"] == 0

    async def test_without_a_token_is_unauthorized(self, client: AsyncClient) -> None:
        response = await client.post("/v1/products", json=VALID)

        assert_problem(response, 401)
        assert response.headers["www-authenticate"] == "Bearer"

    async def test_deactivated_admin_is_unauthorized(
        self, client: AsyncClient, tokens: LocalTokens
    ) -> None:
        headers = tokens.headers(role="admin", active=False)

        response = await client.post("/v1/products", json=VALID, headers=headers)

        assert_problem(response, 401)

    async def test_unknown_field_is_rejected(
        self, client: AsyncClient, admin: dict[str, str]
    ) -> None:
        response = await client.post(
            "/v1/products", json={**VALID, "discount": "5.00"}, headers=admin
        )

        body = assert_problem(response, 422)
        assert error_fields(body) == {"discount"}

    @pytest.mark.parametrize(
        "price", ["-1.00", "0", "0.00", "12.999", "abc", "NaN", "Infinity", "1000000.01", None]
    )
    async def test_invalid_price_is_rejected(
        self, client: AsyncClient, admin: dict[str, str], price: Any
    ) -> None:
        response = await client.post("/v1/products", json={**VALID, "price": price}, headers=admin)

        body = assert_problem(response, 422)
        assert error_fields(body) == {"price"}

    @pytest.mark.parametrize(
        ("sent", "stored"),
        [
            (19.99, "19.99"),  # a JSON number that binary floating point cannot hold exactly
            (0.1, "0.10"),
            (999999.99, "999999.99"),
            ("12.5", "12.50"),
            ("12.990", "12.99"),
            (7, "7.00"),
        ],
    )
    async def test_price_is_kept_exact(
        self, client: AsyncClient, admin: dict[str, str], sent: Any, stored: str
    ) -> None:
        response = await client.post("/v1/products", json={**VALID, "price": sent}, headers=admin)

        assert response.status_code == 201, response.text
        assert response.json()["price"] == stored
        fetched = await client.get(f"/v1/products/{response.json()['id']}")
        assert fetched.json()["price"] == stored

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("sku", ""),
            ("sku", "has space"),
            ("sku", "x" * 65),
            ("sku", "bad/slash"),
            ("name", ""),
            ("name", "   "),
            ("name", "n" * 201),
            ("description", "d" * 5001),
            ("category", ""),
            ("category", "c" * 101),
            ("currency", "usd"),
            ("currency", "EURO"),
            # PostgreSQL cannot store NUL; other control characters are refused alike.
            ("name", "Key\x00board"),
            ("name", "Two\nlines"),
            ("category", "home\x1b"),
            ("description", "Nul\x00"),
        ],
    )
    async def test_invalid_fields_are_rejected(
        self, client: AsyncClient, admin: dict[str, str], field: str, value: str
    ) -> None:
        response = await client.post("/v1/products", json={**VALID, field: value}, headers=admin)

        body = assert_problem(response, 422)
        assert error_fields(body) == {field}

    async def test_missing_fields_are_named(
        self, client: AsyncClient, admin: dict[str, str]
    ) -> None:
        response = await client.post("/v1/products", json={}, headers=admin)

        body = assert_problem(response, 422)
        assert error_fields(body) == {"sku", "name", "price", "category"}

    async def test_longest_allowed_values_are_accepted(
        self, client: AsyncClient, admin: dict[str, str]
    ) -> None:
        body = {
            "sku": "A_b-" + "9" * 60,
            "name": "n" * 200,
            "description": "d" * 5000,
            "price": "1000000.00",
            "currency": "EUR",
            "category": "C" * 100,
        }

        response = await client.post("/v1/products", json=body, headers=admin)

        assert response.status_code == 201, response.text
        assert response.json()["category"] == "c" * 100
        assert response.json()["currency"] == "EUR"

    async def test_lone_surrogate_is_rejected(
        self, client: AsyncClient, admin: dict[str, str]
    ) -> None:
        body = b'{"sku": "KB-001", "name": "\\ud800", "price": "1.00", "category": "x"}'

        response = await client.post(
            "/v1/products", content=body, headers={**admin, "Content-Type": "application/json"}
        )

        assert error_fields(assert_problem(response, 422)) == {"name"}

    async def test_description_may_span_lines(
        self, client: AsyncClient, admin: dict[str, str]
    ) -> None:
        description = "First line.\n\tIndented second line.\r\nThird."

        response = await client.post(
            "/v1/products", json={**VALID, "description": description}, headers=admin
        )

        assert response.status_code == 201, response.text
        assert response.json()["description"] == description

    async def test_same_sku_created_concurrently_is_created_once(
        self, client: AsyncClient, admin: dict[str, str]
    ) -> None:
        responses = await asyncio.gather(
            *(client.post("/v1/products", json=VALID, headers=admin) for _ in range(5))
        )

        assert sorted(response.status_code for response in responses) == [201, 409, 409, 409, 409]
        for response in responses:
            if response.status_code == 409:
                assert_problem(response, 409)
        assert (await client.get("/v1/products")).json()["total"] == 1

    @pytest.mark.parametrize("body", [b"[]", b'"text"', b"", b"{'sku': 1}"])
    async def test_body_that_is_not_an_object_is_rejected(
        self, client: AsyncClient, admin: dict[str, str], body: bytes
    ) -> None:
        response = await client.post(
            "/v1/products",
            content=body,
            headers={**admin, "Content-Type": "application/json"},
        )

        assert_problem(response, 422)

    async def test_malformed_json_is_a_problem_with_request_id(
        self, client: AsyncClient, admin: dict[str, str]
    ) -> None:
        response = await client.post(
            "/v1/products",
            content=b'{"sku": "KB-001", "price": ',
            headers={**admin, "Content-Type": "application/json", "X-Request-ID": "req-123"},
        )

        body = assert_problem(response, 422)
        assert body["request_id"] == "req-123"
        assert "JSON" in body["detail"]

    async def test_oversized_body_is_refused(
        self, client: AsyncClient, admin: dict[str, str]
    ) -> None:
        response = await client.post(
            "/v1/products",
            json={**VALID, "description": "d" * (1024 * 1024)},
            headers=admin,
        )

        assert_problem(response, 413)


class TestSearchProducts:
    async def test_empty_catalog_is_an_empty_page(self, client: AsyncClient) -> None:
        response = await client.get("/v1/products")

        assert response.status_code == 200
        assert response.json() == {"items": [], "total": 0, "limit": 20, "offset": 0}

    async def test_lists_newest_first(self, client: AsyncClient, make_product: MakeProduct) -> None:
        created = [await make_product() for _ in range(3)]

        response = await client.get("/v1/products")

        assert [item["id"] for item in response.json()["items"]] == [
            product["id"] for product in reversed(created)
        ]

    @pytest.mark.parametrize(
        ("q", "expected"),
        [
            ("keyboard", {"KB-001"}),  # name, ignoring case
            ("BROWN", {"KB-001"}),  # description
            ("mse", {"MSE-002"}),  # sku
            ("e", {"KB-001", "MSE-002"}),
            ("  wireless  ", {"MSE-002"}),
            ("nothing like it", set()),
            ("%", {"PCT_100"}),  # LIKE wildcards are taken literally
            ("t_1", {"PCT_100"}),
        ],
    )
    async def test_q_matches_name_description_or_sku(
        self, client: AsyncClient, make_product: MakeProduct, q: str, expected: set[str]
    ) -> None:
        await make_product(sku="KB-001", name="Mechanical Keyboard", description="Brown switches")
        await make_product(sku="MSE-002", name="Wireless Mouse", description="Ergonomic")
        await make_product(sku="PCT_100", name="Gift card", description="100% off nothing")

        response = await client.get("/v1/products", params={"q": q})

        assert response.status_code == 200
        assert {item["sku"] for item in response.json()["items"]} == expected
        assert response.json()["total"] == len(expected)

    async def test_category_filter_ignores_case(
        self, client: AsyncClient, make_product: MakeProduct
    ) -> None:
        book = await make_product(category="Books")
        await make_product(category="home")

        response = await client.get("/v1/products", params={"category": "BOOKS"})

        assert [item["id"] for item in response.json()["items"]] == [book["id"]]
        assert response.json()["items"][0]["category"] == "books"

    @pytest.mark.parametrize(
        ("params", "expected"),
        [
            ({"min_price": "10"}, {"10.00", "10.01", "99.99"}),
            ({"min_price": "10.005"}, {"10.01", "99.99"}),
            ({"max_price": "10.00"}, {"9.99", "10.00"}),
            ({"max_price": "10.009"}, {"9.99", "10.00"}),
            ({"min_price": "10", "max_price": "10"}, {"10.00"}),
            ({"min_price": "10.00", "max_price": "99.99"}, {"10.00", "10.01", "99.99"}),
            ({"min_price": "0", "max_price": "9999999999.99"}, {"9.99", "10.00", "10.01", "99.99"}),
        ],
    )
    async def test_price_range_is_inclusive(
        self,
        client: AsyncClient,
        make_product: MakeProduct,
        params: dict[str, str],
        expected: set[str],
    ) -> None:
        for price in ("9.99", "10.00", "10.01", "99.99"):
            await make_product(price=price)

        response = await client.get("/v1/products", params=params)

        assert response.status_code == 200, response.text
        assert {item["price"] for item in response.json()["items"]} == expected

    async def test_filters_combine(self, client: AsyncClient, make_product: MakeProduct) -> None:
        wanted = await make_product(name="Blue mug", category="home", price="15.00")
        await make_product(name="Blue mug XL", category="home", price="25.00")
        await make_product(name="Blue book", category="books", price="15.00")
        await make_product(name="Red mug", category="home", price="15.00")

        response = await client.get(
            "/v1/products",
            params={"q": "blue", "category": "home", "min_price": "10", "max_price": "20"},
        )

        assert [item["id"] for item in response.json()["items"]] == [wanted["id"]]

    @pytest.mark.parametrize(
        "params",
        [
            {"min_price": "20", "max_price": "10"},
            {"min_price": "-1"},
            {"max_price": "-0.01"},
            {"min_price": "abc"},
            {"max_price": "NaN"},
            {"max_price": "1e400"},
            {"q": "x" * 201},
            {"q": "nul\x00"},
            {"category": "\x00"},
        ],
    )
    async def test_bad_filters_are_rejected(
        self, client: AsyncClient, params: dict[str, str]
    ) -> None:
        response = await client.get("/v1/products", params=params)

        body = assert_problem(response, 422)
        assert body["errors"]

    async def test_pagination_reports_the_total(
        self, client: AsyncClient, make_product: MakeProduct
    ) -> None:
        created = [await make_product() for _ in range(5)]
        newest_first = [product["id"] for product in reversed(created)]

        pages = [
            (await client.get("/v1/products", params={"limit": 2, "offset": offset})).json()
            for offset in (0, 2, 4, 6)
        ]

        assert [page["total"] for page in pages] == [5, 5, 5, 5]
        assert [page["limit"] for page in pages] == [2, 2, 2, 2]
        assert [page["offset"] for page in pages] == [0, 2, 4, 6]
        assert [item["id"] for page in pages for item in page["items"]] == newest_first

    @pytest.mark.parametrize(
        "params", [{"limit": 100000}, {"limit": 0}, {"limit": -1}, {"offset": -1}, {"limit": "x"}]
    )
    async def test_bad_page_parameters_are_rejected(
        self, client: AsyncClient, params: dict[str, Any]
    ) -> None:
        response = await client.get("/v1/products", params=params)

        body = assert_problem(response, 422)
        assert error_fields(body) == set(params)

    async def test_limit_of_100_is_allowed(self, client: AsyncClient) -> None:
        response = await client.get("/v1/products", params={"limit": 100})

        assert response.status_code == 200
        assert response.json()["limit"] == 100

    async def test_inactive_products_are_not_listed(
        self, client: AsyncClient, make_product: MakeProduct, admin: dict[str, str]
    ) -> None:
        kept = await make_product()
        gone = await make_product()
        await client.delete(f"/v1/products/{gone['id']}", headers=admin)

        response = await client.get("/v1/products")

        assert [item["id"] for item in response.json()["items"]] == [kept["id"]]
        assert response.json()["total"] == 1


class TestGetProduct:
    async def test_unknown_product_is_not_found(self, client: AsyncClient) -> None:
        response = await client.get(f"/v1/products/{uuid.uuid4()}")

        assert_problem(response, 404)

    async def test_non_uuid_id_is_rejected(self, client: AsyncClient) -> None:
        response = await client.get("/v1/products/not-a-uuid")

        body = assert_problem(response, 422)
        assert error_fields(body) == {"product_id"}

    async def test_price_is_a_string_with_two_places(
        self, client: AsyncClient, make_product: MakeProduct
    ) -> None:
        product = await make_product(price="12.99")

        response = await client.get(f"/v1/products/{product['id']}")

        assert response.json()["price"] == "12.99"
        assert '"price":"12.99"' in response.text

    async def test_bad_token_is_unauthorized_even_on_a_public_route(
        self, client: AsyncClient, make_product: MakeProduct
    ) -> None:
        product = await make_product()

        response = await client.get(
            f"/v1/products/{product['id']}", headers={"Authorization": "Bearer not-a-jwt"}
        )

        assert_problem(response, 401)


class TestUpdateProduct:
    async def test_changes_only_the_fields_sent(
        self, client: AsyncClient, make_product: MakeProduct, admin: dict[str, str]
    ) -> None:
        product = await make_product(name="Old name", price="10.00", description="Kept")

        response = await client.patch(
            f"/v1/products/{product['id']}",
            json={"name": "New name", "price": "11.50", "category": " Garden "},
            headers=admin,
        )

        assert response.status_code == 200, response.text
        updated = response.json()
        assert updated["name"] == "New name"
        assert updated["price"] == "11.50"
        assert updated["category"] == "garden"
        assert updated["description"] == "Kept"
        assert updated["sku"] == product["sku"]
        assert updated["created_at"] == product["created_at"]
        assert at(updated["updated_at"]) > at(product["updated_at"])
        fetched = await client.get(f"/v1/products/{product['id']}")
        assert fetched.json() == updated

    async def test_empty_patch_changes_nothing(
        self, client: AsyncClient, make_product: MakeProduct, admin: dict[str, str]
    ) -> None:
        product = await make_product()

        response = await client.patch(f"/v1/products/{product['id']}", json={}, headers=admin)

        assert response.status_code == 200
        assert response.json() == product

    async def test_sku_can_change(
        self, client: AsyncClient, make_product: MakeProduct, admin: dict[str, str]
    ) -> None:
        product = await make_product(sku="OLD-1")

        response = await client.patch(
            f"/v1/products/{product['id']}", json={"sku": "NEW-1"}, headers=admin
        )

        assert response.status_code == 200
        assert response.json()["sku"] == "NEW-1"
        assert (await make_product(sku="OLD-1"))["sku"] == "OLD-1"  # the old SKU is free again

    async def test_sku_taken_by_another_product_is_a_conflict(
        self, client: AsyncClient, make_product: MakeProduct, admin: dict[str, str]
    ) -> None:
        await make_product(sku="TAKEN-1")
        product = await make_product(sku="MINE-1", name="Mine")

        response = await client.patch(
            f"/v1/products/{product['id']}", json={"sku": "TAKEN-1", "name": "X"}, headers=admin
        )

        assert_problem(response, 409)
        unchanged = (await client.get(f"/v1/products/{product['id']}")).json()
        assert unchanged["sku"] == "MINE-1"
        assert unchanged["name"] == "Mine"

    @pytest.mark.parametrize(
        "body",
        [
            {"name": None},
            {"price": None},
            {"price": "0"},
            {"price": "1.001"},
            {"sku": "no spaces"},
            {"currency": "eur"},
            {"is_active": "maybe"},
            {"id": "00000000-0000-0000-0000-000000000000"},
            {"created_at": "2020-01-01T00:00:00Z"},
        ],
    )
    async def test_invalid_changes_are_rejected(
        self,
        client: AsyncClient,
        make_product: MakeProduct,
        admin: dict[str, str],
        body: dict[str, Any],
    ) -> None:
        product = await make_product()

        response = await client.patch(f"/v1/products/{product['id']}", json=body, headers=admin)

        problem = assert_problem(response, 422)
        assert error_fields(problem) == set(body)
        assert (await client.get(f"/v1/products/{product['id']}")).json() == product

    async def test_customer_is_forbidden(
        self, client: AsyncClient, make_product: MakeProduct, customer: dict[str, str]
    ) -> None:
        product = await make_product()

        response = await client.patch(
            f"/v1/products/{product['id']}", json={"price": "0.01"}, headers=customer
        )

        assert_problem(response, 403)
        assert (await client.get(f"/v1/products/{product['id']}")).json()["price"] == "10.00"

    async def test_without_a_token_is_unauthorized(
        self, client: AsyncClient, make_product: MakeProduct
    ) -> None:
        product = await make_product()

        response = await client.patch(f"/v1/products/{product['id']}", json={"name": "X"})

        assert_problem(response, 401)

    async def test_unknown_product_is_not_found(
        self, client: AsyncClient, admin: dict[str, str]
    ) -> None:
        for body in ({"name": "X"}, {}):
            response = await client.patch(f"/v1/products/{uuid.uuid4()}", json=body, headers=admin)
            assert_problem(response, 404)

    async def test_reactivates_a_deactivated_product(
        self, client: AsyncClient, make_product: MakeProduct, admin: dict[str, str]
    ) -> None:
        product = await make_product()
        await client.delete(f"/v1/products/{product['id']}", headers=admin)

        response = await client.patch(
            f"/v1/products/{product['id']}", json={"is_active": True}, headers=admin
        )

        assert response.status_code == 200
        assert response.json()["is_active"] is True
        assert (await client.get(f"/v1/products/{product['id']}")).status_code == 200
        assert (await client.get("/v1/products")).json()["total"] == 1


class TestDeleteProduct:
    async def test_deactivates_the_product(
        self,
        client: AsyncClient,
        make_product: MakeProduct,
        admin: dict[str, str],
        customer: dict[str, str],
    ) -> None:
        product = await make_product()

        response = await client.delete(f"/v1/products/{product['id']}", headers=admin)

        assert response.status_code == 204
        assert response.content == b""
        assert (await client.get("/v1/products")).json()["total"] == 0
        assert_problem(await client.get(f"/v1/products/{product['id']}"), 404)
        assert_problem(await client.get(f"/v1/products/{product['id']}", headers=customer), 404)
        as_admin = await client.get(f"/v1/products/{product['id']}", headers=admin)
        assert as_admin.status_code == 200
        assert as_admin.json()["is_active"] is False
        assert at(as_admin.json()["updated_at"]) > at(product["updated_at"])

    async def test_deleting_twice_succeeds(
        self, client: AsyncClient, make_product: MakeProduct, admin: dict[str, str]
    ) -> None:
        product = await make_product()
        await client.delete(f"/v1/products/{product['id']}", headers=admin)

        response = await client.delete(f"/v1/products/{product['id']}", headers=admin)

        assert response.status_code == 204

    async def test_sku_stays_taken(
        self, client: AsyncClient, make_product: MakeProduct, admin: dict[str, str]
    ) -> None:
        product = await make_product(sku="RETIRED-1")
        await client.delete(f"/v1/products/{product['id']}", headers=admin)

        response = await client.post(
            "/v1/products", json={**VALID, "sku": "RETIRED-1"}, headers=admin
        )

        assert_problem(response, 409)

    async def test_unknown_product_is_not_found(
        self, client: AsyncClient, admin: dict[str, str]
    ) -> None:
        response = await client.delete(f"/v1/products/{uuid.uuid4()}", headers=admin)

        assert_problem(response, 404)

    async def test_customer_is_forbidden(
        self, client: AsyncClient, make_product: MakeProduct, customer: dict[str, str]
    ) -> None:
        product = await make_product()

        response = await client.delete(f"/v1/products/{product['id']}", headers=customer)

        assert_problem(response, 403)
        assert (await client.get(f"/v1/products/{product['id']}")).status_code == 200

    async def test_without_a_token_is_unauthorized(
        self, client: AsyncClient, make_product: MakeProduct
    ) -> None:
        product = await make_product()

        response = await client.delete(f"/v1/products/{product['id']}")

        assert_problem(response, 401)


class TestInternalLookup:
    async def test_returns_active_and_inactive_products(
        self, client: AsyncClient, make_product: MakeProduct, admin: dict[str, str]
    ) -> None:
        active = await make_product()
        inactive = await make_product()
        await make_product()  # not asked for
        await client.delete(f"/v1/products/{inactive['id']}", headers=admin)
        unknown = str(uuid.uuid4())

        response = await client.get(
            "/internal/v1/products",
            params=[("ids", inactive["id"]), ("ids", unknown), ("ids", active["id"])],
        )

        assert response.status_code == 200
        items = response.json()["items"]
        assert [item["id"] for item in items] == [inactive["id"], active["id"]]
        assert [item["is_active"] for item in items] == [False, True]
        assert items[1] == active

    async def test_repeated_ids_are_returned_once(
        self, client: AsyncClient, make_product: MakeProduct
    ) -> None:
        product = await make_product()

        response = await client.get(
            "/internal/v1/products", params=[("ids", product["id"]), ("ids", product["id"])]
        )

        assert [item["id"] for item in response.json()["items"]] == [product["id"]]

    async def test_accepts_100_ids(self, client: AsyncClient) -> None:
        ids = [("ids", str(uuid.uuid4())) for _ in range(100)]

        response = await client.get("/internal/v1/products", params=ids)

        assert response.status_code == 200
        assert response.json() == {"items": []}

    @pytest.mark.parametrize(
        "params",
        [[], [("ids", "not-a-uuid")], [("ids", str(uuid.uuid4())) for _ in range(101)]],
        ids=["none", "not-a-uuid", "101-ids"],
    )
    async def test_bad_ids_are_rejected(
        self, client: AsyncClient, params: list[tuple[str, str]]
    ) -> None:
        response = await client.get("/internal/v1/products", params=params)

        assert_problem(response, 422)

    @pytest.mark.parametrize("kind", ["none", "customer", "admin"])
    async def test_without_a_service_credential_is_401(
        self, outsider: AsyncClient, tokens: LocalTokens, make_product: MakeProduct, kind: str
    ) -> None:
        product = await make_product()
        headers = {} if kind == "none" else tokens.headers(role=kind)
        response = await outsider.get(
            "/internal/v1/products", params={"ids": product["id"]}, headers=headers
        )
        assert_problem(response, 401)

    @pytest.mark.parametrize(
        ("caller", "status"),
        [
            ("order_service", 200),
            ("inventory_service", 200),
            ("user_service", 403),
            ("notification_service", 403),
            ("api_gateway", 403),
        ],
    )
    async def test_only_checkout_and_inventory_may_look_up(
        self, outsider: AsyncClient, make_product: MakeProduct, caller: str, status: int
    ) -> None:
        product = await make_product()
        response = await outsider.get(
            "/internal/v1/products",
            params={"ids": product["id"]},
            headers=service_headers(caller, "product_service"),
        )
        assert response.status_code == status, response.text
        if status == 200:
            assert [item["id"] for item in response.json()["items"]] == [product["id"]]


class TestServiceDefaults:
    async def test_health_and_request_id(self, client: AsyncClient) -> None:
        live = await client.get("/health/live", headers={"X-Request-ID": "abc-1"})
        ready = await client.get("/health/ready")

        assert live.status_code == 200
        assert live.headers["x-request-id"] == "abc-1"
        assert ready.status_code == 200
        checks = ready.json()["checks"]
        assert checks["database"] == "ok"
        # The relay's broker is reported, but a broker outage does not fail readiness.
        assert set(checks) == {"database", "broker"}

    async def test_unknown_route_is_a_problem(self, client: AsyncClient) -> None:
        assert_problem(await client.get("/v1/nothing-here"), 404)

    async def test_openapi_documents_price_as_a_string(self, client: AsyncClient) -> None:
        schema = (await client.get("/openapi.json")).json()

        read = schema["components"]["schemas"]["ProductRead"]
        assert read["properties"]["price"]["type"] == "string"
