"""Search that ranks and pages that do not cost the table.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 05:00:00

Indexes of the active products for every filter combination of the public list, on
both backends. On PostgreSQL also: pg_trgm, a generated tsvector of the searchable
fields (name weighs most, then SKU and category, then description) with a GIN index,
and a trigram GIN index of the same text for typos (`%>`) and substrings (`ILIKE`).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ACTIVE_INDEXES = {
    "ix_product_active_created_at": ["created_at", "id"],
    "ix_product_active_category_created_at": ["category", "created_at", "id"],
    "ix_product_active_price": ["price"],
    "ix_product_active_category_price": ["category", "price"],
}

# product_service.repository searches this exact expression.
_DOCUMENT = "sku || ' ' || name || ' ' || category || ' ' || description"
_SEARCH_VECTOR = (
    "setweight(to_tsvector('english'::regconfig, name), 'A')"
    " || setweight(to_tsvector('english'::regconfig, sku || ' ' || category), 'B')"
    " || setweight(to_tsvector('english'::regconfig, description), 'C')"
)


def upgrade() -> None:
    op.drop_index("ix_product_is_active_created_at", table_name="product")
    op.drop_index("ix_product_category", table_name="product")
    for name, columns in _ACTIVE_INDEXES.items():
        op.create_index(
            name,
            "product",
            columns,
            postgresql_where=sa.text("is_active"),
            sqlite_where=sa.text("is_active = 1"),
        )
    if op.get_bind().dialect.name != "postgresql":
        return
    # A trusted extension: the database's owner may create it.
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.execute(
        f"ALTER TABLE product ADD COLUMN search_vector tsvector"
        f" GENERATED ALWAYS AS ({_SEARCH_VECTOR}) STORED"
    )
    op.execute("CREATE INDEX ix_product_search_vector ON product USING gin (search_vector)")
    op.execute(
        f"CREATE INDEX ix_product_search_trigram ON product USING gin (({_DOCUMENT}) gin_trgm_ops)"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX ix_product_search_trigram")
        op.execute("DROP INDEX ix_product_search_vector")
        op.execute("ALTER TABLE product DROP COLUMN search_vector")
    for name in _ACTIVE_INDEXES:
        op.drop_index(name, table_name="product")
    op.create_index("ix_product_category", "product", ["category"])
    op.create_index("ix_product_is_active_created_at", "product", ["is_active", "created_at"])
