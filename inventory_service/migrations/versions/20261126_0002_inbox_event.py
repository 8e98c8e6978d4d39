"""inbox of processed events (eventbus)

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
        "inbox_event",
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("type", sa.String(length=100), nullable=False),
        sa.Column("processed_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_inbox_event")),
    )
    op.create_index("ix_inbox_event_processed_at", "inbox_event", ["processed_at"])


def downgrade() -> None:
    op.drop_index("ix_inbox_event_processed_at", table_name="inbox_event")
    op.drop_table("inbox_event")
