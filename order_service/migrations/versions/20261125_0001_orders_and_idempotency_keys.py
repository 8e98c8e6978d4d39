"""Create the purchase_order, order_line and idempotency_key tables.

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

STATUSES = "'pending', 'confirmed', 'shipped', 'delivered', 'cancelled'"
CANCEL_REASONS = "'out_of_stock', 'payment_declined', 'cancelled_by_user', 'expired'"


def upgrade() -> None:
    op.create_table(
        "purchase_order",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("cancel_reason", sa.String(length=32), nullable=True),
        sa.Column("total_amount", sa.Numeric(precision=12, scale=2), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("payment_id", sa.String(length=64), nullable=True),
        sa.Column("compensation_pending", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(f"status IN ({STATUSES})", name=op.f("ck_purchase_order_status_known")),
        sa.CheckConstraint(
            f"(status = 'cancelled' AND cancel_reason IN ({CANCEL_REASONS}))"
            " OR (status <> 'cancelled' AND cancel_reason IS NULL)",
            name=op.f("ck_purchase_order_cancel_reason_matches_status"),
        ),
        sa.CheckConstraint(
            "total_amount >= 0", name=op.f("ck_purchase_order_total_amount_non_negative")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_purchase_order")),
    )
    op.create_index(
        "ix_purchase_order_user_id_created_at", "purchase_order", ["user_id", "created_at"]
    )
    op.create_index("ix_purchase_order_created_at", "purchase_order", ["created_at"])
    op.create_index(
        "ix_purchase_order_pending_created_at",
        "purchase_order",
        ["created_at"],
        postgresql_where=sa.text("status = 'pending'"),
        sqlite_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "ix_purchase_order_compensation_pending_updated_at",
        "purchase_order",
        ["updated_at"],
        postgresql_where=sa.text("compensation_pending"),
        sqlite_where=sa.text("compensation_pending"),
    )

    op.create_table(
        "order_line",
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("product_id", sa.Uuid(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("product_name", sa.String(length=200), nullable=False),
        sa.Column("unit_price", sa.Numeric(precision=12, scale=2), nullable=False),
        sa.Column("quantity", sa.Integer(), nullable=False),
        sa.Column("line_total", sa.Numeric(precision=12, scale=2), nullable=False),
        sa.CheckConstraint(
            "quantity BETWEEN 1 AND 100", name=op.f("ck_order_line_quantity_in_range")
        ),
        sa.CheckConstraint("unit_price > 0", name=op.f("ck_order_line_unit_price_positive")),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["purchase_order.id"],
            name=op.f("fk_order_line_order_id_purchase_order"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("order_id", "product_id", name=op.f("pk_order_line")),
    )

    op.create_table(
        "idempotency_key",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("request_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=True),
        sa.Column("response_body", sa.JSON(), nullable=True),
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "state IN ('in_progress', 'completed')", name=op.f("ck_idempotency_key_state_known")
        ),
        sa.CheckConstraint(
            "(state = 'completed' AND response_status IS NOT NULL AND response_body IS NOT NULL)"
            " OR (state = 'in_progress' AND response_status IS NULL)",
            name=op.f("ck_idempotency_key_response_when_completed"),
        ),
        sa.PrimaryKeyConstraint("user_id", "key", name=op.f("pk_idempotency_key")),
    )
    op.create_index(
        "ix_idempotency_key_state_created_at", "idempotency_key", ["state", "created_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_idempotency_key_state_created_at", table_name="idempotency_key")
    op.drop_table("idempotency_key")
    op.drop_table("order_line")
    op.drop_index("ix_purchase_order_compensation_pending_updated_at", table_name="purchase_order")
    op.drop_index("ix_purchase_order_pending_created_at", table_name="purchase_order")
    op.drop_index("ix_purchase_order_created_at", table_name="purchase_order")
    op.drop_index("ix_purchase_order_user_id_created_at", table_name="purchase_order")
    op.drop_table("purchase_order")
