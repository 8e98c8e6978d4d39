"""outbox of events (eventbus)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "outbox_event",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("occurred_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("traceparent", sa.String(length=55), nullable=True),
        sa.Column("published_at", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("next_attempt_at", shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_event")),
    )
    op.create_index(
        "ix_outbox_event_published_at_occurred_at",
        "outbox_event",
        ["published_at", "occurred_at"],
    )


def downgrade() -> None:
    op.drop_index("ix_outbox_event_published_at_occurred_at", table_name="outbox_event")
    op.drop_table("outbox_event")
