"""The framework's ceiling for GET /v1/products/{id}: a bare FastAPI app returning the same
response model (product_service's `ProductRead`) from memory, with no middleware, no
database and no dependencies. `bench/gateway.py` serves it with the same uvicorn options
as the services and prints product_service's rate as a share of this one's.

    uvicorn --factory bare_product:create_app --app-dir bench
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

from fastapi import FastAPI

from product_service.schemas import ProductRead

#: The same fields and sizes as the demo catalog's products.
PRODUCT = ProductRead(
    id=uuid.UUID("0b7e4c52-4a1f-4f0e-9a43-2f7d3c1e9b10"),
    sku="KB-MX-001",
    name="Mechanical keyboard",
    description="A tenkeyless mechanical keyboard with hot-swappable switches.",
    price=Decimal("89.90"),
    currency="USD",
    category="electronics",
    is_active=True,
    created_at=datetime(2026, 1, 1, tzinfo=UTC),
    updated_at=datetime(2026, 1, 1, tzinfo=UTC),
)


def create_app() -> FastAPI:
    app = FastAPI()

    @app.get("/v1/products/{product_id}")
    async def get_product(product_id: uuid.UUID) -> ProductRead:
        return PRODUCT

    return app
