"""The demo catalog seed: adds what is missing, and nothing on a second run."""

from __future__ import annotations

import asyncio
import os
import sys

from fastapi import FastAPI
from httpx import AsyncClient

from product_service.seed import demo_products, seed_catalog


class TestSeed:
    async def test_seeding_twice_adds_the_catalog_once(
        self, app: FastAPI, client: AsyncClient
    ) -> None:
        async with app.state.database.sessionmaker() as session:
            first = await seed_catalog(session)
        async with app.state.database.sessionmaker() as session:
            second = await seed_catalog(session)

        assert first == len(demo_products()) >= 15
        assert second == 0
        page = (await client.get("/v1/products", params={"limit": 100})).json()
        assert page["total"] == first
        assert {item["sku"] for item in page["items"]} == {p.sku for p in demo_products()}
        assert len({item["category"] for item in page["items"]}) >= 3

    async def test_keeps_products_that_already_exist(
        self, app: FastAPI, client: AsyncClient, admin: dict[str, str]
    ) -> None:
        demo = demo_products()[0]
        mine = {"sku": demo.sku, "name": "My own", "price": "1.00", "category": "mine"}
        assert (await client.post("/v1/products", json=mine, headers=admin)).status_code == 201

        async with app.state.database.sessionmaker() as session:
            added = await seed_catalog(session)

        assert added == len(demo_products()) - 1
        found = (await client.get("/v1/products", params={"q": demo.sku})).json()["items"]
        assert [item["name"] for item in found] == ["My own"]

    async def test_command_line_reports_what_it_added(
        self, database_url: str, client: AsyncClient
    ) -> None:
        outputs = []
        for _ in range(2):
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "product_service.seed",
                env={**os.environ, "DATABASE_URL": database_url},
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            stdout, stderr = await process.communicate()
            assert process.returncode == 0, stderr.decode()
            outputs.append(stdout.decode())

        count = len(demo_products())
        assert f"{count} products added" in outputs[0]
        assert "0 products added" in outputs[1]
        assert (await client.get("/v1/products")).json()["total"] == count
