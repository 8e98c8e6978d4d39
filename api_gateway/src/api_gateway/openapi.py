"""`GET /openapi.json`: one OpenAPI 3.1 document of the whole public API.

Built from the services' own documents, so that it never drifts from what they serve:
each path the gateway routes is renamed to its `/api/v1/...` form, anything it does not
route (`/internal`, health) is left out, schema names that two services use for
different things are prefixed with the service's name, every operation says whether it
needs a bearer token as the gateway's routing table does, and every error answer is the
problem document it really is.

The services are asked again while the gateway runs, not once at start-up: a service
that was down is tried again on the next request (at most every `retry_seconds`), one
that answered every `refresh_seconds`. A service that does not answer leaves out its
routes (or keeps the last ones it gave), and the document says which are missing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from api_gateway.routing import API_PREFIX, ROUTES, is_public
from shared.http import ServiceClient

logger = logging.getLogger(__name__)

Document = dict[str, Any]

BEARER = "bearerAuth"
PROBLEM = "Problem"
_SCHEMAS_REF = "#/components/schemas/"
_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})
_PREFIX = API_PREFIX.decode().removesuffix("/")  # "/api/v1"

PROBLEM_SCHEMA: Document = {
    "title": PROBLEM,
    "description": "An RFC 9457 problem document: every error answer has this shape.",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "format": "uri", "description": "What kind of error."},
        "title": {"type": "string", "description": "The kind, for people."},
        "status": {"type": "integer", "description": "The HTTP status."},
        "detail": {"type": "string", "description": "This occurrence, for people."},
        "request_id": {
            "type": ["string", "null"],
            "description": "The request's X-Request-ID, to find it in the logs.",
        },
        "errors": {
            "type": "array",
            "maxItems": 20,
            "description": "Validation errors (422 only): where and what.",
            "items": {
                "type": "object",
                "properties": {
                    "loc": {"type": "array", "items": {"type": ["string", "integer"]}},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
}

#: Answers any operation may give at the gateway, added where a service did not say.
_GATEWAY_ANSWERS = {
    "429": "Too many requests from this client; see `Retry-After`.",
    "503": "The service behind this route is down; see `Retry-After` when given.",
    "504": "The service behind this route did not answer in time.",
}
_UNAUTHORIZED = "A bearer access token is missing, invalid or expired."
_BAD_OPTIONAL_CREDENTIAL = "A bearer access token was sent and is invalid or expired."
_TOO_LARGE = "The body is over the size limit (`MAX_BODY_BYTES`, 1 MiB by default)."


def merge_documents(
    services: Mapping[str, Document | None], gateway: Document, *, title: str, version: str
) -> Document:
    """One document from the services' (by upstream name; `None`: not available) and
    the gateway's own."""
    renames = _schema_renames(services)
    paths: Document = dict(gateway.get("paths", {}))
    schemas: Document = {PROBLEM: PROBLEM_SCHEMA}
    tags: dict[str, Document] = {}
    operation_ids: set[str] = set()
    for upstream, document in services.items():
        if document is None:
            continue
        rename = renames.get(upstream, {})
        for path, item in _routed_paths(upstream, document):
            public_path = _PREFIX + path.removeprefix("/v1")
            merged = _rewrite_refs(item, rename)
            for method, operation in _operations(merged):
                _public_operation(operation, method, public_path, operation_ids, upstream)
            paths[public_path] = merged
        for name, schema in document.get("components", {}).get("schemas", {}).items():
            schemas[rename.get(name, name)] = _rewrite_refs(schema, rename)
        for tag in document.get("tags", []):
            tags.setdefault(tag["name"], tag)
    for name, schema in gateway.get("components", {}).get("schemas", {}).items():
        schemas.setdefault(name, schema)
    missing = sorted(name for name, document in services.items() if document is None)
    result: Document = {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": _description(missing)},
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": _referenced(schemas, paths),
            "securitySchemes": {
                BEARER: {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "An access token from POST /api/v1/auth/token.",
                }
            },
        },
        "x-missing-services": missing,
    }
    if tags:
        result["tags"] = list(tags.values())
    return result


def is_openapi_document(value: object) -> bool:
    """Whether `value` looks like an OpenAPI 3 document (a service could answer with
    anything: a proxy's error page, an old version)."""
    return (
        isinstance(value, dict)
        and str(value.get("openapi", "")).startswith("3.")
        and isinstance(value.get("paths"), dict)
    )


def _description(missing: list[str]) -> str:
    text = (
        "Every public route of the shop, through the gateway. Errors are RFC 9457 problem "
        "documents (`application/problem+json`). Routes marked with a lock need "
        "`Authorization: Bearer <access token>`, from `POST /api/v1/auth/token`."
    )
    if missing:
        text += (
            "\n\n**Not answering right now, their routes are missing:** " + ", ".join(missing) + "."
        )
    return text


def _routed_paths(upstream: str, document: Document) -> Iterator[tuple[str, Document]]:
    """The document's paths that the gateway routes to this upstream (`/v1/<resource>`
    with the resource owned by it): nothing internal, nothing unrouted."""
    for path, item in document.get("paths", {}).items():
        resource = path.removeprefix("/v1/").split("/", 1)[0]
        route = ROUTES.get(resource)
        if path.startswith("/v1/") and route is not None and route.upstream == upstream:
            yield path, item


def _operations(item: Document) -> Iterator[tuple[str, Document]]:
    for method, operation in item.items():
        if method in _METHODS and isinstance(operation, dict):
            yield method, operation


def _public_operation(
    operation: Document, method: str, path: str, operation_ids: set[str], upstream: str
) -> None:
    """Say, in place, what the gateway adds to a service's operation: its security as
    the gateway's routing table has it, and problem documents for every error."""
    segments = ["*" if part.startswith("{") else part for part in path.split("/")[3:]]
    responses: Document = operation.setdefault("responses", {})
    if not is_public(method.upper(), segments):
        operation["security"] = [{BEARER: []}]
        responses.setdefault("401", {"description": _UNAUTHORIZED})
    elif operation.get("security"):
        # A public route that also reads a token (an admin sees more) keeps it optional;
        # one that is sent must be valid.
        operation["security"] = [{}, {BEARER: []}]
        responses.setdefault("401", {"description": _BAD_OPTIONAL_CREDENTIAL})
    for status, description in _GATEWAY_ANSWERS.items():
        responses.setdefault(status, {"description": description})
    _request_answers(operation, responses)
    _problem_answers(responses)
    operation_id = operation.get("operationId")
    if operation_id:
        if operation_id in operation_ids:
            operation["operationId"] = f"{upstream}_{operation_id}"
        operation_ids.add(operation["operationId"])


def _request_answers(operation: Document, responses: Document) -> None:
    """What any route answers about the request itself: 400 for a path with characters
    or segments the gateway does not let through or, for a JSON body, one that does not
    parse (after the route's own reasons for a 400), and 413 for a body over the limit."""
    reasons = [responses["400"]["description"].rstrip(".")] if "400" in responses else []
    body = operation.get("requestBody")
    if body:
        responses.setdefault("413", {"description": _TOO_LARGE})
        if "application/json" in body.get("content", {}):
            reasons.append("the body is not valid JSON")
    reasons.append("the path holds characters or segments that are not allowed")
    description = "; or ".join(reasons)
    responses["400"] = {
        **responses.get("400", {}),
        "description": f"{description[0].upper()}{description[1:]}.",
    }


def _problem_answers(responses: Document) -> None:
    """Every error answer is a problem document (FastAPI's own 422 shape is not what
    the services send)."""
    for status, response in responses.items():
        if status == "default" or status.startswith(("4", "5")):
            response["content"] = {"application/problem+json": {"schema": {"$ref": _ref(PROBLEM)}}}
            if response.get("description") == "Validation Error":
                response["description"] = "The request did not pass validation; see `errors`."


def _schema_renames(services: Mapping[str, Document | None]) -> dict[str, dict[str, str]]:
    """Per upstream, the schema names that must change so that no two services' different
    schemas share a name: a name defined differently by two services (or referring to
    such a name) becomes `<upstream>.<name>` in every service that defines it."""
    defined: dict[str, dict[str, Document]] = {}
    for upstream, document in services.items():
        if document is None:
            continue
        for name, schema in document.get("components", {}).get("schemas", {}).items():
            defined.setdefault(name, {})[upstream] = schema
    clashing = {
        name
        for name, by_service in defined.items()
        if len({json.dumps(schema, sort_keys=True) for schema in by_service.values()}) > 1
    }
    # A schema that is the same everywhere but refers to a clashing one clashes too (its
    # reference will point at a different schema in each service): repeat until stable.
    while True:
        more = {
            name
            for name, by_service in defined.items()
            if name not in clashing
            and any(_refs(schema) & clashing for schema in by_service.values())
        }
        if not more:
            break
        clashing |= more
    return {
        upstream: {name: f"{upstream}.{name}" for name in clashing if upstream in defined[name]}
        for upstream in services
    }


def _ref(name: str) -> str:
    return _SCHEMAS_REF + name


def _refs(value: Any) -> set[str]:
    """Names of the schemas `value` refers to, at any depth."""
    found: set[str] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            ref = item.get("$ref")
            if isinstance(ref, str) and ref.startswith(_SCHEMAS_REF):
                found.add(ref.removeprefix(_SCHEMAS_REF))
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def _rewrite_refs(value: Any, rename: Mapping[str, str]) -> Any:
    """A deep copy of `value` with its schema references renamed."""
    if isinstance(value, dict):
        copy = {key: _rewrite_refs(item, rename) for key, item in value.items()}
        ref = copy.get("$ref")
        if isinstance(ref, str) and ref.startswith(_SCHEMAS_REF):
            name = ref.removeprefix(_SCHEMAS_REF)
            copy["$ref"] = _ref(rename.get(name, name))
        return copy
    if isinstance(value, list):
        return [_rewrite_refs(item, rename) for item in value]
    return value


def _referenced(schemas: Document, paths: Document) -> Document:
    """The schemas the paths need, directly or through other schemas (the services'
    internal routes' schemas, and FastAPI's 422 shape that no answer has, go)."""
    needed: set[str] = set()
    pending = _refs(paths)
    while pending:
        name = pending.pop()
        if name in needed or name not in schemas:
            continue
        needed.add(name)
        pending |= _refs(schemas[name])
    return {name: schemas[name] for name in sorted(needed)}


@dataclass
class _Source:
    """One service's document, as last fetched, and when to ask again."""

    url: str
    document: Document | None = None
    due_at: float = field(default=float("-inf"))


class ApiDocument:
    """The merged document, rebuilt when a service's document changed."""

    def __init__(
        self,
        client: ServiceClient,
        gateway: Callable[[], Document],
        *,
        title: str,
        version: str,
        timeout: float,
        refresh_seconds: float,
        retry_seconds: float,
    ) -> None:
        self.client = client
        self.gateway = gateway
        self.title = title
        self.version = version
        self.timeout = timeout
        self.refresh_seconds = refresh_seconds
        self.retry_seconds = retry_seconds
        self.sources = {
            upstream: _Source(f"{client.upstreams[upstream].rstrip('/')}/openapi.json")
            for upstream in dict.fromkeys(route.upstream for route in ROUTES.values())
        }
        self._body: bytes | None = None
        self._lock = asyncio.Lock()

    async def body(self) -> bytes:
        """The document as JSON, asking again the services that are due first."""
        async with self._lock:  # callers arriving together share one round of requests
            now = time.monotonic()
            due = [name for name, source in self.sources.items() if source.due_at <= now]
            fetched = await asyncio.gather(*(self._fetch(self.sources[name].url) for name in due))
            changed = self._body is None
            for name, document in zip(due, fetched, strict=True):
                source = self.sources[name]
                if document is None:
                    source.due_at = now + self.retry_seconds
                    continue  # keep what it said last time, if anything
                source.due_at = now + self.refresh_seconds
                changed = changed or document != source.document
                source.document = document
            if changed or self._body is None:
                merged = merge_documents(
                    {name: source.document for name, source in self.sources.items()},
                    self.gateway(),
                    title=self.title,
                    version=self.version,
                )
                self._body = json.dumps(merged, separators=(",", ":")).encode()
            return self._body

    async def _fetch(self, url: str) -> Document | None:
        # Around the circuit breakers, like the health checks: documentation must not
        # open a circuit that real requests depend on.
        try:
            response = await self.client.http.get(url, timeout=self.timeout)
            document = response.json() if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            document = None
        if not is_openapi_document(document):
            logger.info("no API document from a service", extra={"url": url})
            return None
        assert isinstance(document, dict)
        return document
