"""notification kind order_refunded

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

KINDS = "'welcome', 'order_confirmed', 'order_cancelled', 'order_shipped'"


def _allow(kinds: str) -> None:
    # Batch mode: SQLite changes a CHECK constraint only by rebuilding the table (no
    # foreign key points at `notification`, so the rebuild loses nothing).
    with op.batch_alter_table("notification") as batch:
        batch.drop_constraint(op.f("ck_notification_kind_known"), type_="check")
        batch.create_check_constraint(op.f("ck_notification_kind_known"), f"kind IN ({kinds})")


def upgrade() -> None:
    _allow(f"{KINDS}, 'order_refunded'")


def downgrade() -> None:
    op.execute("DELETE FROM notification WHERE kind = 'order_refunded'")
    _allow(KINDS)
