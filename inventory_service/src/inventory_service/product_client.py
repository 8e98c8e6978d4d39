"""What the inventory service asks product_service (its internal API): whether the
catalog knows a product."""

from __future__ import annotations

import uuid

from shared.http import ServiceClient, UpstreamUnavailable

PRODUCT_UPSTREAM = "product"


class ProductClient:
    def __init__(self, client: ServiceClient) -> None:
        self.client = client

    async def has_product(self, product_id: uuid.UUID) -> bool:
        """Whether the catalog knows the product (active or not).

        A catalog that cannot be reached raises a 503 problem (the client's own); one
        that answers nonsense does too, rather than letting stock be created blindly."""
        response = await self.client.request(
            PRODUCT_UPSTREAM, "GET", "/internal/v1/products", params={"ids": str(product_id)}
        )
        if response.status_code != 200:
            raise UpstreamUnavailable(
                f"The catalog answered {response.status_code} to a product lookup."
            )
        try:
            items = response.json()["items"]
            return any(uuid.UUID(str(item["id"])) == product_id for item in items)
        except (ValueError, KeyError, TypeError) as error:
            raise UpstreamUnavailable("The catalog's answer could not be read.") from error
