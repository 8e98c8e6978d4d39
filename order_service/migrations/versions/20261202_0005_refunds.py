"""refunds: refunded amounts and quantities of orders, and the refunds themselves

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 06:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The CHECK rides on the new column: SQLite adds constraints to an existing table
    # only by rebuilding it, which (foreign keys on) would cascade-delete order lines.
    op.execute(
        "ALTER TABLE purchase_order ADD COLUMN refunded_amount NUMERIC(12, 2) DEFAULT 0 NOT NULL"
        " CONSTRAINT ck_purchase_order_refunded_amount_in_range"
        " CHECK (refunded_amount >= 0 AND refunded_amount <= total_amount)"
    )
    op.execute(
        "ALTER TABLE order_line ADD COLUMN refunded_quantity INTEGER DEFAULT 0 NOT NULL"
        " CONSTRAINT ck_order_line_refunded_quantity_in_range"
        " CHECK (refunded_quantity >= 0 AND refunded_quantity <= quantity)"
    )

    op.create_table(
        "refund",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("amount", sa.Numeric(precision=12, scale=2), nullable=False),
        sa.Column("restock", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(length=500), nullable=True),
        sa.Column("requested_by", sa.Uuid(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=False),
        sa.Column("request_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("payment_refund_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount > 0", name=op.f("ck_refund_amount_positive")),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["purchase_order.id"],
            name=op.f("fk_refund_order_id_purchase_order"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refund")),
        sa.UniqueConstraint(
            "requested_by", "idempotency_key", name=op.f("uq_refund_requested_by_idempotency_key")
        ),
    )
    op.create_index("ix_refund_order_id_created_at", "refund", ["order_id", "created_at"])
    op.create_index(
        "ix_refund_unpaid_created_at",
        "refund",
        ["created_at"],
        postgresql_where=sa.text("payment_refund_id IS NULL"),
        sqlite_where=sa.text("payment_refund_id IS NULL"),
    )
    op.create_table(
        "refund_line",
        sa.Column("refund_id", sa.Uuid(), nullable=False),
        sa.Column("product_id", sa.Uuid(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("amount", sa.Numeric(precision=12, scale=2), nullable=False),
        sa.CheckConstraint(
            "quantity BETWEEN 1 AND 100", name=op.f("ck_refund_line_quantity_in_range")
        ),
        sa.CheckConstraint("amount > 0", name=op.f("ck_refund_line_amount_positive")),
        sa.ForeignKeyConstraint(
            ["refund_id"],
            ["refund.id"],
            name=op.f("fk_refund_line_refund_id_refund"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("refund_id", "product_id", name=op.f("pk_refund_line")),
    )


def downgrade() -> None:
    op.drop_table("refund_line")
    op.drop_index("ix_refund_unpaid_created_at", table_name="refund")
    op.drop_index("ix_refund_order_id_created_at", table_name="refund")
    op.drop_table("refund")
    # On SQLite this needs 3.35 (DROP COLUMN) and the CHECK goes with its column.
    op.drop_column("order_line", "refunded_quantity")
    op.drop_column("purchase_order", "refunded_amount")
