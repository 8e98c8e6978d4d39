"""Dependency aliases of the user service's routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from shared.auth import CurrentClaims
from shared.service import SessionDep, app_settings, from_state
from user_service.config import Settings
from user_service.keys import KeyRing
from user_service.models import User
from user_service.passwords import PasswordHasher
from user_service.service import AccountService, TokenService
from user_service.throttle import LoginThrottle

SettingsDep = Annotated[Settings, Depends(app_settings)]


#: The signing keys and the password hasher, made in the lifespan.
get_key_ring = from_state("key_ring")
get_password_hasher = from_state("password_hasher")

KeyRingDep = Annotated[KeyRing, Depends(get_key_ring)]
PasswordHasherDep = Annotated[PasswordHasher, Depends(get_password_hasher)]


async def get_account_service(session: SessionDep, hasher: PasswordHasherDep) -> AccountService:
    return AccountService(session, hasher)


async def get_token_service(
    session: SessionDep, hasher: PasswordHasherDep, keys: KeyRingDep, settings: SettingsDep
) -> TokenService:
    return TokenService(session, hasher, keys, settings)


get_login_throttle = from_state("login_throttle")


AccountServiceDep = Annotated[AccountService, Depends(get_account_service)]
TokenServiceDep = Annotated[TokenService, Depends(get_token_service)]
LoginThrottleDep = Annotated[LoginThrottle, Depends(get_login_throttle)]


async def get_current_user(claims: CurrentClaims, accounts: AccountServiceDep) -> User:
    """The account behind the access token (the verifier already checked it is active)."""
    return await accounts.get(claims.user_id)


CurrentUser = Annotated[User, Depends(get_current_user)]
