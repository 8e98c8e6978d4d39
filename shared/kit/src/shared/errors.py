"""RFC 9457 problem documents: one error base class, one set of handlers for every service."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from http import HTTPStatus
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import BaseRoute, Route

from shared.logging import request_id_var

PROBLEM_JSON = "application/problem+json"


class ProblemError(Exception):
    """Base of every error a service raises on purpose; rendered as a problem document."""

    status_code: int = 500
    title: str | None = None
    type_slug: str | None = None

    def __init__(
        self,
        detail: str | None = None,
        *,
        status_code: int | None = None,
        title: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        if status_code is not None:
            self.status_code = status_code
        if title is not None:
            self.title = title
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra or {}
        super().__init__(detail or self.title or HTTPStatus(self.status_code).phrase)


class BadRequest(ProblemError):
    status_code = 400


class Unauthorized(ProblemError):
    status_code = 401
    title = "Not authenticated"

    def __init__(self, detail: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"WWW-Authenticate": "Bearer"})
        super().__init__(detail, **kwargs)


class Forbidden(ProblemError):
    status_code = 403


class NotFound(ProblemError):
    status_code = 404


class ResourceNotFound(NotFound):
    """404 for a resource looked up by its id; a subclass names the `resource`."""

    resource: ClassVar[str]

    def __init__(self, resource_id: uuid.UUID) -> None:
        super().__init__(f"There is no {self.resource} with id {resource_id}.")


class Conflict(ProblemError):
    status_code = 409


class PayloadTooLarge(ProblemError):
    status_code = 413


class UnprocessableEntity(ProblemError):
    status_code = 422


class TooManyRequests(ProblemError):
    status_code = 429


class ServiceUnavailable(ProblemError):
    status_code = 503


class GatewayTimeout(ProblemError):
    status_code = 504


def problem_answers(answers: Mapping[int, str]) -> dict[int | str, dict[str, Any]]:
    """A route's `responses=`: each error it may answer (besides validation and what
    every route may answer), with what it means there, as the problem document it is."""
    return {
        status: {"description": description, "content": {PROBLEM_JSON: {}}}
        for status, description in answers.items()
    }


def problem_response(
    status_code: int,
    *,
    title: str | None = None,
    detail: str | None = None,
    type_slug: str | None = None,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> JSONResponse:
    """Build an `application/problem+json` response."""
    phrase = HTTPStatus(status_code).phrase
    slug = type_slug or phrase.lower().replace(" ", "-").replace("'", "")
    body: dict[str, Any] = {
        "type": f"https://errors.ecommerce.example/{slug}",
        "title": title or phrase,
        "status": status_code,
        "detail": detail or title or phrase,
        "request_id": request_id_var.get(),
    }
    if extra:
        body.update(extra)
    return JSONResponse(
        jsonable_encoder(body), status_code=status_code, headers=headers, media_type=PROBLEM_JSON
    )


def problem_for(error: ProblemError) -> JSONResponse:
    """The problem document of a raised `ProblemError`."""
    extra = error.extra
    if isinstance(extra.get("errors"), list):
        extra = {**extra, **_bounded_errors(extra["errors"])}
    return problem_response(
        error.status_code,
        title=error.title,
        detail=error.detail,
        type_slug=error.type_slug,
        headers=error.headers,
        extra=extra,
    )


async def _handle_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    return problem_for(exc)


async def _handle_http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    return _http_problem(exc, dict(exc.headers) if exc.headers else None)


def _http_problem(exc: StarletteHTTPException, headers: dict[str, str] | None) -> JSONResponse:
    detail = exc.detail if isinstance(exc.detail, str) else None
    return problem_response(exc.status_code, detail=detail, headers=headers)


def method_not_allowed(
    routes: Iterable[BaseRoute],
) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    """The 405 handler for an app of `routes`: its `Allow` names every method of the path
    (RFC 9110, 15.5.6). Starlette's names those of the first route that matched the path
    only, so a path served by two routes (GET and DELETE /v1/cart) said `Allow: GET`."""
    table = [
        (route.path_regex, route.methods)
        for route in routes
        if isinstance(route, Route) and route.methods
    ]

    async def handle(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        path = request.scope["path"].removeprefix(request.scope.get("root_path", ""))
        allowed = {method for regex, methods in table if regex.match(path) for method in methods}
        headers = dict(exc.headers or {})
        if allowed:
            headers["Allow"] = ", ".join(sorted(allowed))
        return _http_problem(exc, headers)

    return handle


#: A problem document lists at most this many validation errors (CONTRACT: at most 20),
#: so a hostile body with thousands of mistakes still gets an answer the size of a page.
MAX_VALIDATION_ERRORS = 20
#: Longest string echoed back in an error (a field name or message); longer ones are cut.
MAX_ECHOED_CHARS = 100


def _truncate(value: object) -> object:
    if isinstance(value, str) and len(value) > MAX_ECHOED_CHARS:
        return value[: MAX_ECHOED_CHARS - 1] + "…"
    return value


def _clean_error(error: dict[str, Any]) -> dict[str, Any]:
    # Echoing the whole input back can leak passwords; keep where and what, not the value,
    # and cut what is echoed (a field name is the client's own text, of any length).
    return {
        "loc": [_truncate(part) for part in error.get("loc", ())],
        "msg": _truncate(error.get("msg")),
        "type": _truncate(error.get("type")),
    }


def _bounded_errors(errors: Sequence[Any]) -> dict[str, Any]:
    """`errors` cut to the first `MAX_VALIDATION_ERRORS`, and how many there were."""
    return {"errors": list(errors[:MAX_VALIDATION_ERRORS]), "errors_total": len(errors)}


async def _handle_validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    all_errors = exc.errors()
    errors = [_clean_error(e) for e in all_errors[:MAX_VALIDATION_ERRORS]]
    if any(e["type"] == "json_invalid" for e in errors):
        detail = "The request body is not valid JSON."
    elif len(all_errors) > MAX_VALIDATION_ERRORS:
        detail = (
            f"The request did not pass validation: {len(all_errors)} errors, "
            f"the first {MAX_VALIDATION_ERRORS} in `errors`."
        )
    else:
        detail = "The request did not pass validation; see `errors`."
    return problem_response(
        422,
        title="Validation failed",
        detail=detail,
        type_slug="validation-failed",
        extra={"errors": errors, "errors_total": len(all_errors)},
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ProblemError, _handle_problem)
    app.add_exception_handler(StarletteHTTPException, _handle_http_exception)
    app.add_exception_handler(RequestValidationError, _handle_validation_error)
    # Anything else is caught by RequestContextMiddleware, which can still add the
    # request id to the 500 it sends (Starlette's own last-resort handler cannot).
