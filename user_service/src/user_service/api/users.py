"""Profiles: one's own, and every account for administrators."""

from __future__ import annotations

import uuid

from fastapi import APIRouter

from shared.auth import AdminClaims
from shared.errors import problem_answers
from shared.schemas import Page, PageDep
from user_service.deps import AccountServiceDep, CurrentUser
from user_service.schemas import UserAdminUpdate, UserRead, UserSelfUpdate

router = APIRouter(prefix="/v1/users", tags=["users"])


@router.get("/me")
async def read_own_profile(user: CurrentUser) -> UserRead:
    """The caller's own profile."""
    return UserRead.model_validate(user)


@router.patch("/me")
async def update_own_profile(
    data: UserSelfUpdate, user: CurrentUser, accounts: AccountServiceDep
) -> UserRead:
    """Change one's own name or password (a new password ends other sessions)."""
    return UserRead.model_validate(await accounts.update_self(user, data))


@router.get("")
async def list_users(_: AdminClaims, page: PageDep, accounts: AccountServiceDep) -> Page[UserRead]:
    """Every account, oldest first (administrators)."""
    return await accounts.page(page)


@router.get("/{user_id}", responses=problem_answers({404: "No such user"}))
async def read_user(user_id: uuid.UUID, _: AdminClaims, accounts: AccountServiceDep) -> UserRead:
    """One account (administrators)."""
    return UserRead.model_validate(await accounts.get(user_id))


@router.patch(
    "/{user_id}",
    responses=problem_answers(
        {404: "No such user", 409: "Administrators cannot deactivate or demote themselves"}
    ),
)
async def update_user(
    user_id: uuid.UUID, data: UserAdminUpdate, admin: AdminClaims, accounts: AccountServiceDep
) -> UserRead:
    """Change an account's name, role or active flag (administrators)."""
    return UserRead.model_validate(await accounts.update_as_admin(admin.user_id, user_id, data))
