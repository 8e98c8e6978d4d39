"""Create the stock, reservation and reservation_line tables.

Revision ID: 0001
Revises:
Create Date: 2026-11-25 00:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "stock",
        sa.Column("product_id", sa.Uuid(), nullable=False),
        sa.Column("available", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("reserved", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("sold", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("available >= 0", name=op.f("ck_stock_available_non_negative")),
        sa.CheckConstraint("reserved >= 0", name=op.f("ck_stock_reserved_non_negative")),
        sa.CheckConstraint("sold >= 0", name=op.f("ck_stock_sold_non_negative")),
        sa.PrimaryKeyConstraint("product_id", name=op.f("pk_stock")),
    )
    op.create_table(
        "reservation",
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('reserved', 'committed', 'released')",
            name=op.f("ck_reservation_status_known"),
        ),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_reservation")),
    )
    op.create_index(
        "ix_reservation_reserved_expires_at",
        "reservation",
        ["expires_at"],
        postgresql_where=sa.text("status = 'reserved'"),
        sqlite_where=sa.text("status = 'reserved'"),
    )
    op.create_table(
        "reservation_line",
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("product_id", sa.Uuid(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.CheckConstraint("quantity > 0", name=op.f("ck_reservation_line_quantity_positive")),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["reservation.order_id"],
            name=op.f("fk_reservation_line_order_id_reservation"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("order_id", "product_id", name=op.f("pk_reservation_line")),
    )


def downgrade() -> None:
    op.drop_table("reservation_line")
    op.drop_index("ix_reservation_reserved_expires_at", table_name="reservation")
    op.drop_table("reservation")
    op.drop_table("stock")
