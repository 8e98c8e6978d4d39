"""Create the notification, recipient and inbox_event tables.

Revision ID: 0001
Revises:
Create Date: 2026-11-26 10:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db
from eventbus.migrations import create_inbox_table, drop_inbox_table

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "notification",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=True),
        sa.Column("recipient", sa.String(length=320), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind IN ('welcome', 'order_confirmed', 'order_cancelled', 'order_shipped')",
            name=op.f("ck_notification_kind_known"),
        ),
        sa.CheckConstraint(
            "status IN ('sent', 'recorded', 'failed')", name=op.f("ck_notification_status_known")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification")),
    )
    op.create_index("ix_notification_user_id_created_at", "notification", ["user_id", "created_at"])
    op.create_index("ix_notification_created_at", "notification", ["created_at"])
    op.create_table(
        "recipient",
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("full_name", sa.String(length=200), nullable=False),
        sa.Column("created_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_recipient")),
    )
    create_inbox_table()


def downgrade() -> None:
    drop_inbox_table()
    op.drop_table("recipient")
    op.drop_index("ix_notification_created_at", table_name="notification")
    op.drop_index("ix_notification_user_id_created_at", table_name="notification")
    op.drop_table("notification")
