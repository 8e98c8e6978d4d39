"""shipping address on orders, and the order timeline

Orders placed before this have a timeline made from what they show: `created` at their
creation, and their current status (if past `pending`) at their last change.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 05:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EVENTS = "'created', 'confirmed', 'cancelled', 'shipped', 'delivered', 'refunded'"
STATUSES = "'pending', 'confirmed', 'shipped', 'delivered', 'cancelled'"


def upgrade() -> None:
    op.add_column("purchase_order", sa.Column("shipping_address", sa.JSON(), nullable=True))
    op.create_table(
        "order_timeline_entry",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("event", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.String(length=64), nullable=True),
        sa.Column("at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            f"event IN ({EVENTS})", name=op.f("ck_order_timeline_entry_event_known")
        ),
        sa.CheckConstraint(
            f"status IN ({STATUSES})", name=op.f("ck_order_timeline_entry_status_known")
        ),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["purchase_order.id"],
            name=op.f("fk_order_timeline_entry_order_id_purchase_order"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_order_timeline_entry")),
    )
    op.create_index(
        "ix_order_timeline_entry_order_id_id", "order_timeline_entry", ["order_id", "id"]
    )
    op.execute(
        "INSERT INTO order_timeline_entry (order_id, event, status, detail, at)"
        " SELECT id, 'created', 'pending', NULL, created_at FROM purchase_order"
        " ORDER BY created_at"
    )
    op.execute(
        "INSERT INTO order_timeline_entry (order_id, event, status, detail, at)"
        " SELECT id, status, status, cancel_reason, updated_at FROM purchase_order"
        " WHERE status <> 'pending' ORDER BY updated_at"
    )


def downgrade() -> None:
    op.drop_index("ix_order_timeline_entry_order_id_id", table_name="order_timeline_entry")
    op.drop_table("order_timeline_entry")
    op.drop_column("purchase_order", "shipping_address")
