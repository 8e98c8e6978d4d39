"""Alembic operations for the events tables: a service's migration that adds its outbox
or its inbox is one call, and the tables' columns are written once (in `outbox.py` and
`consumer.py`), not copied into every service's migrations.

    def upgrade() -> None:
        create_outbox_table()

    def downgrade() -> None:
        drop_outbox_table()
"""

from __future__ import annotations

from alembic import op
from sqlalchemy import PrimaryKeyConstraint, Table

from eventbus.consumer import INBOX
from eventbus.outbox import OUTBOX


def create_outbox_table() -> None:
    _create(OUTBOX)


def drop_outbox_table() -> None:
    _drop(OUTBOX)


def create_inbox_table() -> None:
    _create(INBOX)


def drop_inbox_table() -> None:
    _drop(INBOX)


def _create(table: Table) -> None:
    key = table.primary_key
    op.create_table(
        table.name,
        *(column._copy() for column in table.columns),
        PrimaryKeyConstraint(*(column.name for column in key.columns), name=op.f(str(key.name))),
    )
    for index in sorted(table.indexes, key=lambda index: str(index.name)):
        op.create_index(
            str(index.name),
            table.name,
            [column.name for column in index.columns],
            unique=index.unique,
        )


def _drop(table: Table) -> None:
    for index in sorted(table.indexes, key=lambda index: str(index.name)):
        op.drop_index(str(index.name), table_name=table.name)
    op.drop_table(table.name)
