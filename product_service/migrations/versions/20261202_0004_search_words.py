"""Typos corrected against the catalog's words; exact names found by index.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 11:00:00

PostgreSQL only: `catalog_word`, every word (with a letter) that the catalog's searchable
text holds, with a trigram index, kept by triggers on `product`. A misspelt word of a
search is matched against these few thousand words (pg_trgm's `%>`), not against the
text of every product (product_service.repository). Words are never taken out: one that
no product has any more expands a search to nothing.

Both backends: indexes of the lowercased name and SKU of the active products, so the
"exact name first" of a search looks the exact matches up instead of lowering the name
and SKU of every match.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_EXACT_INDEXES = {
    "ix_product_active_lower_name": "lower(name)",
    "ix_product_active_lower_sku": "lower(sku)",
}

# The words of the searchable text, split and lowercased as pg_trgm splits them (letters
# and digits); numbers alone (SKU digits) are no words to correct a typo to.
_WORDS_OF = """
    INSERT INTO catalog_word (word)
    SELECT DISTINCT word
    FROM {rows},
         regexp_split_to_table(
             lower(sku || ' ' || name || ' ' || category || ' ' || description),
             '[^[:alnum:]]+'
         ) AS word
    WHERE word ~ '[[:alpha:]]'
    ON CONFLICT DO NOTHING
"""


def upgrade() -> None:
    for name, expression in _EXACT_INDEXES.items():
        op.create_index(
            name,
            "product",
            [sa.text(expression)],
            postgresql_where=sa.text("is_active"),
            sqlite_where=sa.text("is_active = 1"),
        )
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE TABLE catalog_word (word text PRIMARY KEY)")
    op.execute("CREATE INDEX ix_catalog_word_trigram ON catalog_word USING gin (word gin_trgm_ops)")
    # Statement triggers with the statement's new rows: a bulk insert adds its words in
    # one statement, not one per product.
    op.execute(
        f"""
        CREATE FUNCTION catalog_word_add() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            {_WORDS_OF.format(rows="new_products")};
            RETURN NULL;
        END
        $$
        """
    )
    for event in ("INSERT", "UPDATE"):
        op.execute(
            f"CREATE TRIGGER catalog_word_on_{event.lower()} AFTER {event} ON product"
            " REFERENCING NEW TABLE AS new_products"
            " FOR EACH STATEMENT EXECUTE FUNCTION catalog_word_add()"
        )
    op.execute(_WORDS_OF.format(rows="product"))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER catalog_word_on_update ON product")
        op.execute("DROP TRIGGER catalog_word_on_insert ON product")
        op.execute("DROP FUNCTION catalog_word_add()")
        op.execute("DROP TABLE catalog_word")
    for name in _EXACT_INDEXES:
        op.drop_index(name, table_name="product")
