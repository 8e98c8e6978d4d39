"""Request and response models of the user service."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, EmailStr, Field, StringConstraints

from shared.schemas import PartialUpdate, RequestModel, ResponseModel, SingleLineText

Email = Annotated[EmailStr, Field(max_length=320), AfterValidator(str.lower)]
Password = Annotated[str, Field(min_length=8, max_length=128)]
FullName = Annotated[
    SingleLineText, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)
]


class UserRegister(RequestModel):
    email: Email
    password: Password
    full_name: FullName


class UserSelfUpdate(PartialUpdate):
    full_name: FullName | None = None
    password: Password | None = None


class UserAdminUpdate(PartialUpdate):
    full_name: FullName | None = None
    role: Literal["customer", "admin"] | None = None
    is_active: bool | None = None


class UserRead(ResponseModel):
    id: uuid.UUID
    email: str
    full_name: str
    role: Literal["customer", "admin"]
    is_active: bool
    created_at: datetime


class UserStatusRead(ResponseModel):
    is_active: bool
    role: Literal["customer", "admin"]


class RefreshRequest(RequestModel):
    refresh_token: Annotated[str, Field(min_length=1, max_length=512)]


class TokenPair(ResponseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the OAuth2 token type
    expires_in: int
    refresh_token: str
