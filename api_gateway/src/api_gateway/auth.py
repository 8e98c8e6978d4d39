"""Edge authentication: a protected route needs a valid bearer token before anything is
forwarded. The services verify the token again; this only keeps the anonymous out."""

from __future__ import annotations

import logging

from api_gateway.errors import TokenCheckUnavailable
from shared.auth import TokenClaims, TokenVerifier
from shared.errors import ProblemError, Unauthorized

logger = logging.getLogger(__name__)


async def authenticate(
    authorization: bytes | None, verifier: TokenVerifier, *, max_bytes: int
) -> TokenClaims:
    """Verify the `Authorization: Bearer <jwt>` header; raise a problem (401) if it fails."""
    if authorization is None:
        raise Unauthorized("A bearer access token is required.")
    if len(authorization) > max_bytes:
        raise Unauthorized("The Authorization header is too large.")
    scheme, _, credentials = authorization.partition(b" ")
    token = credentials.strip()
    if scheme.lower() != b"bearer" or not token:
        raise Unauthorized("A bearer access token is required.")
    try:
        return await verifier.verify(token.decode("latin-1"))
    except ProblemError:
        raise
    except Exception as error:
        # The JWKS or the account check answered with something unusable: a dependency
        # problem, not the client's fault, and not worth a 500.
        logger.warning("token verification failed", exc_info=True)
        raise TokenCheckUnavailable("Access tokens cannot be checked right now.") from error
