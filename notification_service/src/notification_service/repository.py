"""SQL of notifications and recipients."""

from __future__ import annotations

import uuid

from sqlalchemy import ColumnElement, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from notification_service.models import Notification, Recipient
from shared.db import utcnow
from shared.paging import PageResult, SortKey, fetch_page
from shared.schemas import PageParams


class NotificationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, notification: Notification) -> None:
        self.session.add(notification)
        await self.session.flush()

    async def page(
        self, *, user_id: uuid.UUID | None, page: PageParams
    ) -> PageResult[Notification]:
        """One page (one user's, or everyone's), newest first."""
        conditions: list[ColumnElement[bool]] = []
        if user_id is not None:
            conditions.append(Notification.user_id == user_id)
        return await fetch_page(
            self.session,
            select(Notification).where(*conditions),
            # Ids break ties between rows of the same instant: pages never overlap.
            order_by=(SortKey(Notification.created_at), SortKey(Notification.id)),
            page=page,
            scope=repr(user_id),
        )


class RecipientRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, user_id: uuid.UUID) -> Recipient | None:
        return await self.session.get(Recipient, user_id)

    async def save(self, user_id: uuid.UUID, email: str, full_name: str) -> None:
        """Insert the recipient, or update its address and name."""
        dialect = self.session.get_bind().dialect.name
        insert_ = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = insert_(Recipient).values(
            user_id=user_id, email=email, full_name=full_name, created_at=utcnow()
        )
        statement = statement.on_conflict_do_update(
            index_elements=[Recipient.user_id],
            set_={"email": statement.excluded.email, "full_name": statement.excluded.full_name},
        )
        await self.session.execute(statement)
