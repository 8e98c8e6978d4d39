"""What the user service publishes (it consumes nothing)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from eventbus import add_event
from eventbus.types import USER_REGISTERED, UserRegistered
from user_service.models import User

SOURCE = "user_service"


async def stage_user_registered(session: AsyncSession, user: User) -> None:
    """`user.registered`, in the transaction that creates the account."""
    await add_event(
        session,
        USER_REGISTERED,
        UserRegistered(user_id=user.id, email=user.email, full_name=user.full_name),
        SOURCE,
    )
