"""SQL of the user service."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import is_unique_violation
from shared.paging import PageResult, SortKey, fetch_page
from shared.schemas import PageParams
from user_service.models import RefreshToken, User


class EmailTaken(Exception):
    pass


class UserRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, user: User) -> User:
        """Insert `user`; the unique index on e-mail settles concurrent sign-ups."""
        self.session.add(user)
        try:
            await self.session.flush()
        except IntegrityError as error:
            await self.session.rollback()
            if is_unique_violation(error):
                raise EmailTaken(user.email) from error
            raise
        return user

    async def get(self, user_id: uuid.UUID) -> User | None:
        return await self.session.get(User, user_id)

    async def get_by_email(self, email: str) -> User | None:
        result = await self.session.execute(select(User).where(User.email == email))
        return result.scalar_one_or_none()

    async def page(self, page: PageParams) -> PageResult[User]:
        """One page of every account, oldest first."""
        return await fetch_page(
            self.session,
            select(User),
            order_by=(
                SortKey(User.created_at, descending=False),
                SortKey(User.id, descending=False),
            ),
            page=page,
        )


class RefreshTokenRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, token: RefreshToken) -> None:
        self.session.add(token)
        await self.session.flush()

    async def get_by_hash(self, token_hash: str) -> RefreshToken | None:
        result = await self.session.execute(
            select(RefreshToken).where(RefreshToken.token_hash == token_hash)
        )
        return result.scalar_one_or_none()

    async def spend(self, token_id: uuid.UUID, now: datetime) -> bool:
        """Mark the token used; False if it already was (a conditional UPDATE, so two
        concurrent refreshes with one token cannot both succeed)."""
        result = await self.session.execute(
            update(RefreshToken)
            .where(
                RefreshToken.id == token_id,
                RefreshToken.used_at.is_(None),
                RefreshToken.revoked_at.is_(None),
            )
            .values(used_at=now)
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    async def revoke_family(self, family_id: uuid.UUID, now: datetime) -> None:
        await self.session.execute(
            update(RefreshToken)
            .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=now)
        )

    async def revoke_all_for_user(self, user_id: uuid.UUID, now: datetime) -> None:
        await self.session.execute(
            update(RefreshToken)
            .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
            .values(revoked_at=now)
        )
