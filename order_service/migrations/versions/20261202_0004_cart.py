"""carts

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 05:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "cart",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("updated_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_cart")),
    )
    op.create_table(
        "cart_line",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("product_id", sa.Uuid(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("added_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "quantity BETWEEN 1 AND 100", name=op.f("ck_cart_line_quantity_in_range")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["cart.user_id"],
            name=op.f("fk_cart_line_user_id_cart"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", "product_id", name=op.f("pk_cart_line")),
    )


def downgrade() -> None:
    op.drop_table("cart_line")
    op.drop_table("cart")
