"""An index for the administrators' list of accounts (oldest first, keyset pages).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 06:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_user_account_created_at_id", "user_account", ["created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_user_account_created_at_id", table_name="user_account")
