"""Accounts and tokens: what the routes of the user service ask for."""

from __future__ import annotations

import hashlib
import logging
import secrets
import uuid
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from shared.auth import UserStatus
from shared.db import Database, utcnow
from shared.errors import Conflict
from shared.schemas import Page, PageParams
from user_service.config import Settings
from user_service.errors import EmailAlreadyRegistered, InvalidCredentials, UserNotFound
from user_service.events import stage_user_registered
from user_service.keys import KeyRing
from user_service.models import RefreshToken, Role, User
from user_service.passwords import PasswordHasher
from user_service.repository import EmailTaken, RefreshTokenRepository, UserRepository
from user_service.schemas import (
    TokenPair,
    UserAdminUpdate,
    UserRead,
    UserRegister,
    UserSelfUpdate,
)

logger = logging.getLogger(__name__)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class AccountService:
    def __init__(self, session: AsyncSession, hasher: PasswordHasher) -> None:
        self.session = session
        self.hasher = hasher
        self.users = UserRepository(session)
        self.refresh_tokens = RefreshTokenRepository(session)

    async def register(self, data: UserRegister, *, role: Role = Role.CUSTOMER) -> User:
        user = User(
            email=data.email,
            full_name=data.full_name,
            password_hash=await self.hasher.hash(data.password),
            role=role,
            is_active=True,
        )
        try:
            await self.users.add(user)
        except EmailTaken as error:
            raise EmailAlreadyRegistered("An account with this e-mail already exists.") from error
        await stage_user_registered(self.session, user)
        await self.session.commit()
        logger.info("user registered", extra={"user_id": str(user.id), "role": user.role})
        return user

    async def get(self, user_id: uuid.UUID) -> User:
        user = await self.users.get(user_id)
        if user is None:
            raise UserNotFound(f"No user with id {user_id}.")
        return user

    async def page(self, page: PageParams) -> Page[UserRead]:
        """Every account, oldest first."""
        return (await self.users.page(page)).to_page(UserRead, page.limit)

    async def update_self(self, user: User, data: UserSelfUpdate) -> User:
        if data.full_name is not None:
            user.full_name = data.full_name
        if data.password is not None:
            user.password_hash = await self.hasher.hash(data.password)
            # A new password logs out every other session.
            await self.refresh_tokens.revoke_all_for_user(user.id, utcnow())
        await self.session.commit()
        return user

    async def update_as_admin(
        self, admin_id: uuid.UUID, user_id: uuid.UUID, data: UserAdminUpdate
    ) -> User:
        user = await self.get(user_id)
        if user.id == admin_id and (data.is_active is False or data.role == "customer"):
            raise Conflict("Administrators cannot deactivate or demote themselves.")
        if data.full_name is not None:
            user.full_name = data.full_name
        if data.role is not None:
            user.role = data.role
        if data.is_active is not None:
            user.is_active = data.is_active
            if not data.is_active:
                await self.refresh_tokens.revoke_all_for_user(user.id, utcnow())
        await self.session.commit()
        logger.info(
            "user updated by admin",
            extra={
                "user_id": str(user.id),
                "admin_id": str(admin_id),
                "changes": data.model_dump(exclude_none=True),
            },
        )
        return user

    async def ensure_admin(self, email: str, password: str) -> None:
        """Create the bootstrap administrator unless an account with that e-mail exists."""
        if await self.users.get_by_email(email.lower()) is not None:
            return
        try:
            await self.register(
                UserRegister(email=email, password=password, full_name="Administrator"),
                role=Role.ADMIN,
            )
        except EmailAlreadyRegistered:
            return  # another worker created it first
        logger.info("bootstrap administrator created", extra={"email": email.lower()})


class TokenService:
    def __init__(
        self, session: AsyncSession, hasher: PasswordHasher, keys: KeyRing, settings: Settings
    ) -> None:
        self.session = session
        self.hasher = hasher
        self.keys = keys
        self.settings = settings
        self.users = UserRepository(session)
        self.refresh_tokens = RefreshTokenRepository(session)

    async def login(self, email: str, password: str) -> TokenPair:
        user = await self.users.get_by_email(email.strip().lower())
        valid, new_hash = await self.hasher.verify(password, user.password_hash if user else None)
        if user is None or not valid:
            raise InvalidCredentials("Incorrect e-mail or password.")
        if not user.is_active:
            raise InvalidCredentials("This account is deactivated.")
        if new_hash is not None:
            user.password_hash = new_hash
        return await self._issue(user, family_id=uuid.uuid4())

    async def refresh(self, refresh_token: str) -> TokenPair:
        now = utcnow()
        stored = await self.refresh_tokens.get_by_hash(_token_hash(refresh_token))
        if stored is None or stored.revoked_at is not None or stored.expires_at <= now:
            raise InvalidCredentials("The refresh token is not valid.")
        if not await self.refresh_tokens.spend(stored.id, now):
            # A spent token came back: someone holds a copy. End the whole family.
            await self.refresh_tokens.revoke_family(stored.family_id, now)
            await self.session.commit()
            logger.warning(
                "refresh token reuse detected",
                extra={"user_id": str(stored.user_id), "family_id": str(stored.family_id)},
            )
            raise InvalidCredentials("The refresh token was already used.")
        user = await self.users.get(stored.user_id)
        if user is None or not user.is_active:
            await self.session.commit()
            raise InvalidCredentials("This account is deactivated.")
        return await self._issue(user, family_id=stored.family_id)

    async def _issue(self, user: User, *, family_id: uuid.UUID) -> TokenPair:
        now = utcnow()
        refresh_token = secrets.token_urlsafe(32)
        await self.refresh_tokens.add(
            RefreshToken(
                user_id=user.id,
                family_id=family_id,
                token_hash=_token_hash(refresh_token),
                expires_at=now + timedelta(seconds=self.settings.refresh_token_ttl_seconds),
            )
        )
        await self.session.commit()
        ttl = self.settings.access_token_ttl_seconds
        access_token = self.keys.sign(
            {
                "sub": str(user.id),
                "role": user.role,
                "iss": self.settings.jwt_issuer,
                "aud": self.settings.jwt_audience,
                "iat": int(now.timestamp()),
                "exp": int(now.timestamp()) + ttl,
                "jti": uuid.uuid4().hex,
            }
        )
        return TokenPair(access_token=access_token, expires_in=ttl, refresh_token=refresh_token)


class DatabaseUserStatus:
    """`shared.auth.UserStatusSource` read straight from this service's own database."""

    def __init__(self, database: Database) -> None:
        self.database = database

    async def get_status(self, user_id: uuid.UUID) -> UserStatus | None:
        async with self.database.sessionmaker() as session:
            user = await session.get(User, user_id)
        return None if user is None else UserStatus(is_active=user.is_active, role=user.role)
