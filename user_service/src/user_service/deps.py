"""Dependency aliases of the user service's routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from shared.auth import CurrentClaims
from shared.service import SessionDep
from user_service.models import User
from user_service.service import AccountService, TokenService


async def get_account_service(request: Request, session: SessionDep) -> AccountService:
    return AccountService(session, request.app.state.password_hasher)


async def get_token_service(request: Request, session: SessionDep) -> TokenService:
    state = request.app.state
    return TokenService(session, state.password_hasher, state.key_ring, state.settings)


AccountServiceDep = Annotated[AccountService, Depends(get_account_service)]
TokenServiceDep = Annotated[TokenService, Depends(get_token_service)]


async def get_current_user(claims: CurrentClaims, accounts: AccountServiceDep) -> User:
    """The account behind the access token (the verifier already checked it is active)."""
    return await accounts.get(claims.user_id)


CurrentUser = Annotated[User, Depends(get_current_user)]
