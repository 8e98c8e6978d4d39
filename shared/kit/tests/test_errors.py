"""Problem documents stay small whatever the error carries."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from service_testing import assert_problem
from shared.errors import UnprocessableEntity, install_error_handlers
from shared.middleware import RequestContextMiddleware


async def test_a_problem_lists_at_most_twenty_errors() -> None:
    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(RequestContextMiddleware)

    @app.get("/many")
    async def many() -> None:
        raise UnprocessableEntity(
            "Fifty lines are wrong.",
            extra={"errors": [{"loc": ["body", "items", n], "type": "x"} for n in range(50)]},
        )

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        problem = assert_problem(await client.get("/many"), 422)
    assert [error["loc"][-1] for error in problem["errors"]] == list(range(20))
    assert problem["errors_total"] == 50
