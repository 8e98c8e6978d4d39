"""restocking refunded units: units restocked per reservation line, and refunds done

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 06:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The CHECK rides on the new column: SQLite adds constraints to an existing table
    # only by rebuilding it.
    op.execute(
        "ALTER TABLE reservation_line ADD COLUMN restocked INTEGER DEFAULT 0 NOT NULL"
        " CONSTRAINT ck_reservation_line_restocked_in_range"
        " CHECK (restocked >= 0 AND restocked <= quantity)"
    )
    op.create_table(
        "restock",
        sa.Column("refund_id", sa.Uuid(), nullable=False),
        sa.Column("order_id", sa.Uuid(), nullable=False),
        sa.Column("created_at", shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("refund_id", name=op.f("pk_restock")),
    )


def downgrade() -> None:
    op.drop_table("restock")
    op.drop_column("reservation_line", "restocked")
