"""inbox of processed events (eventbus)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 09:00:00
"""

from collections.abc import Sequence

from eventbus.migrations import create_inbox_table, drop_inbox_table

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_inbox_table()


def downgrade() -> None:
    drop_inbox_table()
