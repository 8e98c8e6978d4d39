"""The gateway's own problem types (the services' problems pass through unchanged)."""

from __future__ import annotations

from shared.errors import BadRequest, ServiceUnavailable, TooManyRequests


class BadPath(BadRequest):
    title = "Invalid request path"
    type_slug = "invalid-path"


class ClientClosedRequest(BadRequest):
    title = "Client closed request"
    type_slug = "client-closed-request"


class RateLimited(TooManyRequests):
    title = "Too many requests"
    type_slug = "rate-limited"


class TokenCheckUnavailable(ServiceUnavailable):
    title = "Access tokens cannot be checked"
    type_slug = "token-check-unavailable"
