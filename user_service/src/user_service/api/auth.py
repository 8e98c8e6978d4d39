"""Registration, tokens and the JWKS."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.security import OAuth2PasswordRequestForm

from shared.errors import problem_answers
from user_service.deps import AccountServiceDep, KeyRingDep, LoginThrottleDep, TokenServiceDep
from user_service.errors import InvalidCredentials
from user_service.schemas import RefreshRequest, TokenPair, UserRead, UserRegister

router = APIRouter(prefix="/v1/auth", tags=["auth"])


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    responses=problem_answers({409: "An account with this e-mail exists"}),
)
async def register_user(data: UserRegister, accounts: AccountServiceDep) -> UserRead:
    """Create a customer account."""
    return UserRead.model_validate(await accounts.register(data))


@router.post(
    "/token",
    responses=problem_answers(
        {
            401: "Wrong e-mail or password, or a deactivated account",
            429: "Too many failed attempts for this account; see `Retry-After`",
        }
    ),
)
async def issue_token(
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    tokens: TokenServiceDep,
    throttle: LoginThrottleDep,
    request: Request,
) -> TokenPair:
    """Exchange e-mail (`username`) and password for an access and a refresh token;
    429 with `Retry-After` after repeated failures for the account or from the address."""
    # The server resolved the proxies' X-Forwarded-For into the client (uvicorn's
    # --proxy-headers, trusting the gateway).
    address = request.client.host if request.client else ""
    await throttle.check(form.username, address)
    try:
        return await tokens.login(form.username, form.password)
    except InvalidCredentials:
        await throttle.record_failure(form.username, address)
        raise


@router.post(
    "/refresh",
    responses=problem_answers(
        {401: "The refresh token is not valid, already spent, or its account deactivated"}
    ),
)
async def refresh_token(data: RefreshRequest, tokens: TokenServiceDep) -> TokenPair:
    """Spend a refresh token for a new pair; a reused one ends its whole session."""
    return await tokens.refresh(data.refresh_token)


@router.get("/jwks")
async def get_jwks(keys: KeyRingDep, response: Response) -> dict[str, Any]:
    """Public keys that verify access tokens (RFC 7517)."""
    response.headers["Cache-Control"] = "public, max-age=300"
    jwks: dict[str, Any] = keys.jwks
    return jwks
