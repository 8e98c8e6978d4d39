"""A demo catalog: `python -m product_service.seed` adds the products whose SKU is missing.

Running it again changes nothing; it prints how many products it added. Each product
added gets its `product.created` event in the same transaction; the service's relay
publishes them once it runs."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from product_service.config import get_settings
from product_service.events import stage_product_created
from product_service.repository import ProductRepository
from product_service.schemas import ProductCreate
from shared.db import Database, utcnow

_DEMO_PRODUCTS: tuple[tuple[str, str, str, str, str], ...] = (
    # sku, name, category, price, description
    (
        "ELEC-HDPH-001",
        "Wireless Noise-Cancelling Headphones",
        "electronics",
        "199.99",
        "Over-ear Bluetooth headphones with active noise cancelling and 30-hour battery life.",
    ),
    (
        "ELEC-SPKR-002",
        "Portable Bluetooth Speaker",
        "electronics",
        "59.90",
        "Waterproof (IP67) speaker with 12 hours of playback and a built-in microphone.",
    ),
    (
        "ELEC-KBD-003",
        "Mechanical Keyboard",
        "electronics",
        "89.00",
        "Tenkeyless keyboard with hot-swappable brown switches and a detachable USB-C cable.",
    ),
    (
        "ELEC-MSE-004",
        "Ergonomic Wireless Mouse",
        "electronics",
        "39.99",
        "Vertical mouse with six buttons, adjustable DPI and a rechargeable battery.",
    ),
    (
        "ELEC-CHG-005",
        "65W USB-C Charger",
        "electronics",
        "34.50",
        "GaN wall charger with two USB-C ports and one USB-A port.",
    ),
    (
        "BOOK-PROG-001",
        "Designing Data-Intensive Applications",
        "books",
        "42.99",
        "Martin Kleppmann's guide to reliable, scalable and maintainable data systems.",
    ),
    (
        "BOOK-PROG-002",
        "The Pragmatic Programmer",
        "books",
        "39.95",
        "20th anniversary edition of the classic on the craft of software development.",
    ),
    (
        "BOOK-FICT-003",
        "Dune",
        "books",
        "10.99",
        "Frank Herbert's science fiction epic of politics, religion and ecology on Arrakis.",
    ),
    (
        "BOOK-COOK-004",
        "Salt, Fat, Acid, Heat",
        "books",
        "24.00",
        "Samin Nosrat on the four elements of good cooking, with illustrated recipes.",
    ),
    (
        "HOME-MUG-001",
        "Stoneware Coffee Mug",
        "home",
        "14.00",
        "Hand-glazed 350 ml mug, dishwasher and microwave safe.",
    ),
    (
        "HOME-KTL-002",
        "Electric Gooseneck Kettle",
        "home",
        "69.99",
        "1 litre pour-over kettle with temperature control and a keep-warm mode.",
    ),
    (
        "HOME-LMP-003",
        "LED Desk Lamp",
        "home",
        "45.00",
        "Dimmable lamp with five colour temperatures and a USB charging port.",
    ),
    (
        "HOME-TWL-004",
        "Organic Cotton Bath Towel Set",
        "home",
        "49.50",
        "Two bath towels and two hand towels in 600 gsm organic cotton.",
    ),
    (
        "HOME-PLT-005",
        "Ceramic Plant Pot",
        "home",
        "18.75",
        "20 cm matte pot with a drainage hole and a bamboo saucer.",
    ),
    (
        "CLTH-TSH-001",
        "Organic Cotton T-Shirt",
        "clothing",
        "19.99",
        "Crew-neck unisex t-shirt in heavyweight organic cotton.",
    ),
    (
        "CLTH-HOD-002",
        "Merino Wool Hoodie",
        "clothing",
        "89.90",
        "Lightweight full-zip hoodie in temperature-regulating merino wool.",
    ),
    (
        "CLTH-SCK-003",
        "Hiking Socks (3 pairs)",
        "clothing",
        "24.99",
        "Cushioned wool-blend socks with reinforced heels and toes.",
    ),
    (
        "SPRT-YGA-001",
        "Non-Slip Yoga Mat",
        "sports",
        "29.99",
        "6 mm natural rubber mat with alignment lines and a carrying strap.",
    ),
    (
        "SPRT-BTL-002",
        "Insulated Water Bottle",
        "sports",
        "27.00",
        "750 ml stainless steel bottle that keeps drinks cold for 24 hours.",
    ),
    (
        "SPRT-RUN-003",
        "Running Belt",
        "sports",
        "16.50",
        "Bounce-free waist pack that fits phones up to 6.7 inches.",
    ),
)


def demo_products() -> list[ProductCreate]:
    """The demo catalog, validated like any product an admin creates."""
    return [
        ProductCreate(
            sku=sku, name=name, category=category, price=Decimal(price), description=description
        )
        for sku, name, category, price, description in _DEMO_PRODUCTS
    ]


async def seed_catalog(session: AsyncSession) -> int:
    """Add the demo products that are not in the catalog yet; returns how many were added."""
    now = utcnow()
    rows: list[dict[str, Any]] = [
        {**product.model_dump(), "created_at": now, "updated_at": now}
        for product in demo_products()
    ]
    added = await ProductRepository(session).insert_missing(rows)
    for product in added:
        await stage_product_created(session, product)
    await session.commit()
    return len(added)


async def main() -> None:
    settings = get_settings()
    database = Database(settings.effective_database_url())
    try:
        async with database.sessionmaker() as session:
            added = await seed_catalog(session)
    finally:
        await database.dispose()
    total = len(_DEMO_PRODUCTS)
    print(f"Seeded the catalog: {added} products added, {total - added} already present.")


if __name__ == "__main__":
    asyncio.run(main())
