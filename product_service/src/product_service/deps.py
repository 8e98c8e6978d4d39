"""Annotated dependency aliases of the product service."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from product_service.cache import ProductCache
from product_service.schemas import ProductFilters
from product_service.service import ProductService
from shared.auth import TokenClaims, TokenVerifier, current_claims, get_token_verifier
from shared.db import Database
from shared.service import SessionDep, from_state, get_database

_optional_bearer = HTTPBearer(
    auto_error=False, description="Optional access token; administrators see more."
)


async def get_product_service(session: SessionDep) -> ProductService:
    return ProductService(session)


async def optional_claims(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_optional_bearer)],
    verifier: Annotated[TokenVerifier, Depends(get_token_verifier)],
) -> TokenClaims | None:
    """The caller's claims when a token was sent (a bad one is still a 401), else None."""
    if credentials is None:
        return None
    return await current_claims(credentials, verifier)


get_product_cache = from_state("product_cache")
ProductCacheDep = Annotated[ProductCache, Depends(get_product_cache)]
#: For a route that opens a session only when it needs one: a session dependency
#: (`SessionDep`) costs every request a generator, a cancel scope and an exit stack.
DatabaseDep = Annotated[Database, Depends(get_database)]
ProductServiceDep = Annotated[ProductService, Depends(get_product_service)]
OptionalClaims = Annotated[TokenClaims | None, Depends(optional_claims)]
ProductFiltersDep = Annotated[ProductFilters, Query()]
