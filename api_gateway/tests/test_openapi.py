"""`/openapi.json` merged from the services' documents, and `/docs` served offline."""

from __future__ import annotations

import re
from typing import Any

import pytest

from api_gateway.openapi import PROBLEM, merge_documents

PROBLEM_REF = {"$ref": f"#/components/schemas/{PROBLEM}"}


def schema_of(operation: dict[str, Any], status: str) -> Any:
    content = operation["responses"][status]["content"]
    return next(iter(content.values()))["schema"]


class TestMergedDocument:
    async def test_every_routed_path_under_its_public_name(self, gateway) -> None:
        response = await gateway.get("/openapi.json")
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        document = response.json()
        assert document["openapi"] == "3.1.0"
        expected = {"/health"}
        resources = (
            "auth",
            "users",
            "products",
            "orders",
            "cart",
            "inventory",
            "notifications",
            "webhooks",
        )
        for resource in resources:
            expected |= {f"/api/v1/{resource}", f"/api/v1/{resource}/{{item_id}}"}
        assert set(document["paths"]) == expected
        assert document["x-missing-services"] == []

    async def test_nothing_internal(self, gateway) -> None:
        text = (await gateway.get("/openapi.json")).text
        assert "/internal" not in text
        assert "_secret" not in text
        # Schemas only internal routes used, and FastAPI's 422 shape, are left out.
        schemas = (await gateway.get("/openapi.json")).json()["components"]["schemas"]
        assert "Secret" not in schemas
        assert "HTTPValidationError" not in schemas

    async def test_schema_names_do_not_collide(self, gateway) -> None:
        document = (await gateway.get("/openapi.json")).json()
        schemas = document["components"]["schemas"]
        # Each service's different `Page` under a name of its own; the same `Money` once.
        assert schemas["product.Page"]["title"] == "product page"
        assert schemas["order.Page"]["title"] == "order page"
        assert "Page" not in schemas
        assert schemas["Money"]["type"] == "string"
        listing = document["paths"]["/api/v1/orders"]["get"]
        assert schema_of(listing, "200") == {"$ref": "#/components/schemas/order.Page"}
        for name, schema in schemas.items():
            for ref in re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', str(schema)):
                assert ref in schemas, (name, ref)

    async def test_security_follows_the_gateways_routing_table(self, gateway) -> None:
        document = (await gateway.get("/openapi.json")).json()
        scheme = document["components"]["securitySchemes"]["bearerAuth"]
        assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
        paths = document["paths"]
        assert "security" not in paths["/api/v1/products"]["get"]
        # Not public at the gateway although the fake service declared no security.
        assert paths["/api/v1/orders"]["get"]["security"] == [{"bearerAuth": []}]
        delete = paths["/api/v1/products/{item_id}"]["delete"]
        assert delete["security"] == [{"bearerAuth": []}]
        assert "401" in delete["responses"]

    async def test_errors_are_problem_documents(self, gateway) -> None:
        document = (await gateway.get("/openapi.json")).json()
        assert document["components"]["schemas"][PROBLEM]["required"] == [
            "type",
            "title",
            "status",
            "detail",
        ]
        for path, item in document["paths"].items():
            if not path.startswith("/api/"):
                continue  # the gateway's own /health answers 503 with its report
            for method, operation in item.items():
                for status in ("429", "503", "504"):
                    assert status in operation["responses"], (path, method, status)
                for status, answer in operation["responses"].items():
                    if status.startswith(("4", "5")):
                        assert answer["content"] == {
                            "application/problem+json": {"schema": PROBLEM_REF}
                        }, (path, method, status)


class TestRefresh:
    async def test_a_service_down_is_left_out_and_named(self, make_gateway, upstreams) -> None:
        upstreams["order"].documented = False
        async with make_gateway() as gateway:
            document = (await gateway.get("/openapi.json")).json()
        assert document["x-missing-services"] == ["order"]
        assert "order" in document["info"]["description"]
        assert "/api/v1/orders" not in document["paths"]
        assert "/api/v1/products" in document["paths"]

    async def test_a_service_that_comes_up_is_added(self, make_gateway, upstreams) -> None:
        upstreams["order"].documented = False
        async with make_gateway(openapi_retry_seconds=0) as gateway:
            assert "/api/v1/orders" not in (await gateway.get("/openapi.json")).json()["paths"]
            upstreams["order"].documented = True
            document = (await gateway.get("/openapi.json")).json()
        assert "/api/v1/orders" in document["paths"]
        assert document["x-missing-services"] == []

    async def test_a_service_that_goes_down_keeps_its_last_routes(
        self, make_gateway, upstreams
    ) -> None:
        async with make_gateway(openapi_refresh_seconds=0) as gateway:
            assert "/api/v1/orders" in (await gateway.get("/openapi.json")).json()["paths"]
            upstreams["order"].documented = False
            assert "/api/v1/orders" in (await gateway.get("/openapi.json")).json()["paths"]

    async def test_every_service_down_still_answers(self, make_gateway, closed_port_url) -> None:
        urls = {f"{name}_service_url": closed_port_url for name in ("user", "product", "order")}
        async with make_gateway(**urls) as gateway:
            response = await gateway.get("/openapi.json")
        assert response.status_code == 200
        assert response.json()["x-missing-services"] == ["order", "product", "user"]
        assert "/health" in response.json()["paths"]


class TestDocsPage:
    async def test_every_asset_is_the_gateways_own(self, gateway) -> None:
        page = await gateway.get("/docs")
        assert page.status_code == 200
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp
        assert "default-src 'none'" in csp
        assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert len(assets) == 4  # favicon, stylesheet, Swagger UI, its start-up script
        assert "<script>" not in page.text  # nothing inline: the CSP would block it
        for asset in assets:
            assert asset.startswith("/docs/assets/"), asset
            response = await gateway.get(asset)
            assert response.status_code == 200, asset
            assert len(response.content) > 100, asset

    async def test_unknown_asset_is_a_404(self, gateway) -> None:
        response = await gateway.get("/docs/assets/nope.js")
        assert response.status_code == 404


class TestMergeDocuments:
    """The merge on its own, for what the fake services above do not show."""

    @staticmethod
    def service(schemas: dict[str, Any], ref: str) -> dict[str, Any]:
        operation = {"responses": {"200": {"content": {"application/json": {"schema": ref}}}}}
        return {
            "openapi": "3.1.0",
            "paths": {"/v1/users": {"get": operation}},
            "components": {"schemas": schemas},
        }

    def test_a_schema_referring_to_a_clashing_one_is_renamed_too(self) -> None:
        user = self.service(
            {"Outer": {"$ref": "#/components/schemas/Inner"}, "Inner": {"type": "string"}},
            {"$ref": "#/components/schemas/Outer"},
        )
        product = self.service(
            {"Outer": {"$ref": "#/components/schemas/Inner"}, "Inner": {"type": "integer"}},
            {"$ref": "#/components/schemas/Outer"},
        )
        product["paths"] = {"/v1/products": product["paths"]["/v1/users"]}
        merged = merge_documents({"user": user, "product": product}, {}, title="t", version="1")
        schemas = merged["components"]["schemas"]
        assert schemas["user.Outer"] == {"$ref": "#/components/schemas/user.Inner"}
        assert schemas["product.Outer"] == {"$ref": "#/components/schemas/product.Inner"}
        assert schemas["product.Inner"] == {"type": "integer"}

    def test_a_path_of_a_resource_another_service_owns_is_left_out(self) -> None:
        # The routing table sends /api/v1/users to the user service: a product service
        # that also served /v1/users would not be reachable there.
        product = self.service({}, {"type": "string"})
        merged = merge_documents({"product": product}, {}, title="t", version="1")
        assert merged["paths"] == {}

    @pytest.mark.parametrize(
        ("method", "declared", "security"),
        [
            ("get", None, None),
            ("get", [{"HTTPBearer": []}], [{}, {"bearerAuth": []}]),
            ("post", None, [{"bearerAuth": []}]),
        ],
    )
    def test_public_routes_need_no_token(self, method: str, declared: Any, security: Any) -> None:
        operation: dict[str, Any] = {"responses": {}}
        if declared:
            operation["security"] = declared
        product = {"openapi": "3.1.0", "paths": {"/v1/products": {method: operation}}}
        merged = merge_documents({"product": product}, {}, title="t", version="1")
        assert merged["paths"]["/api/v1/products"][method].get("security") == security
