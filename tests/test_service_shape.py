"""Properties every service must keep, checked across the workspace."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.security import OAuth2PasswordRequestForm

from devstack import SERVICES, ServiceSpec
from shared.errors import ProblemError
from shared.service_auth import ServiceCallers, ServiceCredentialMiddleware

REPO = Path(__file__).parents[1]
#: Classes FastAPI instantiates as dependencies (a thread hop each; only on cold routes).
ALLOWED_SYNC = {OAuth2PasswordRequestForm}


def apps() -> Iterator[tuple[str, FastAPI]]:
    for spec in SERVICES:
        module, factory = spec.app.split(":")
        yield spec.name, getattr(importlib.import_module(module), factory)()


def api_routes(app: FastAPI) -> Iterator[Any]:
    """Every API route of `app` as served, with the dependencies of the routers that
    include it (FastAPI includes routers lazily: `app.routes` holds the routers)."""
    for route in iter_route_contexts(app.routes):
        if isinstance(route.original_route, APIRoute):
            yield route


def dependencies(dependant: Dependant) -> Iterator[Any]:
    for sub in dependant.dependencies:
        yield sub.call
        yield from dependencies(sub)


def is_async(call: Any) -> bool:
    # A security scheme instance (HTTPBearer) is called through its async __call__.
    target = call if inspect.isfunction(call) or inspect.ismethod(call) else type(call).__call__
    return inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target)


@pytest.mark.parametrize(("name", "app"), list(apps()), ids=[spec.name for spec in SERVICES])
def test_no_dependency_blocks_a_worker_thread(name: str, app: FastAPI) -> None:
    """A plain `def` dependency or endpoint runs in the thread pool: a thread hop per
    request (and, for real blocking work, a hidden bottleneck)."""
    offenders = []
    for route in api_routes(app):
        if not inspect.iscoroutinefunction(route.endpoint):
            offenders.append(f"{route.path}: endpoint {route.endpoint.__name__}")
        for call in dependencies(route.dependant):
            if call in ALLOWED_SYNC or is_async(call):
                continue
            offenders.append(f"{route.path}: {getattr(call, '__name__', call)}")
    assert not offenders, f"{name} has synchronous dependencies: {sorted(set(offenders))}"


def settings_variables(*packages: str) -> set[str]:
    """Every environment variable the settings of `packages` (by default, of every
    service) read."""
    names: set[str] = set()
    for package in packages or tuple(spec.app.split(".")[0] for spec in SERVICES):
        settings = importlib.import_module(f"{package}.config").Settings
        for field_name, field in settings.model_fields.items():
            names.add(field_name.upper())
            alias = field.validation_alias
            for choice in getattr(alias, "choices", []) or (
                [alias] if isinstance(alias, str) else []
            ):
                if isinstance(choice, str):
                    names.add(choice.upper())
    return names


def test_env_example_documents_only_what_the_services_read() -> None:
    documented = set(
        re.findall(r"^([A-Z][A-Z0-9_]*)=", (REPO / ".env.example").read_text(), re.MULTILINE)
    )
    unknown = documented - settings_variables()
    assert not unknown, f".env.example sets variables no service reads: {sorted(unknown)}"
    required = {
        "DATABASE_URL",
        "ADMIN_EMAIL",
        "ADMIN_PASSWORD",
        "RATE_LIMIT_PER_MINUTE",
        "REDIS_URL",
        "LOG_LEVEL",
    }
    assert required <= documented


def modules_of(package: str) -> Iterator[ModuleType]:
    root = importlib.import_module(package)
    for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
        yield importlib.import_module(info.name)


@pytest.mark.parametrize("spec", SERVICES, ids=[spec.name for spec in SERVICES])
def test_problem_types_live_in_errors_py(spec: ServiceSpec) -> None:
    """One place for a service's errors: every problem type it defines is in `errors.py`."""
    misplaced = {
        f"{module.__name__}.{name}"
        for module in modules_of(spec.package)
        for name, value in vars(module).items()
        if inspect.isclass(value)
        and issubclass(value, ProblemError)
        and value.__module__ == module.__name__
        and module.__name__ != f"{spec.package}.errors"
    }
    assert not misplaced, f"problem types outside {spec.package}.errors: {sorted(misplaced)}"


SERVICE_FILES = ("main.py", "config.py", "deps.py", "errors.py", "schemas.py", "service.py")


@pytest.mark.parametrize(
    "spec",
    [spec for spec in SERVICES if spec.migrations],
    ids=[spec.name for spec in SERVICES if spec.migrations],
)
def test_every_service_has_the_same_shape(spec: ServiceSpec) -> None:
    source = REPO / spec.package / "src" / spec.package
    missing = [
        name
        for name in (*SERVICE_FILES, "models.py", "repository.py", "api")
        if not (source / name).exists()
    ]
    assert not missing, f"{spec.package} lacks {missing}"
    assert not (source / "domain").exists(), "a domain/ package must be pure; see the README"


@pytest.mark.parametrize(("name", "app"), list(apps()), ids=[spec.name for spec in SERVICES])
def test_every_internal_route_names_its_callers(name: str, app: FastAPI) -> None:
    """CONTRACT: an `/internal` route answers only the services that need it, so each
    one declares them (`require_service`); the credential itself is checked before
    routing, by the middleware every process with internal routes gets."""
    internal = [route for route in api_routes(app) if route.path.startswith("/internal/")]
    unguarded = [
        f"{sorted(route.methods)} {route.path}"
        for route in internal
        if not any(isinstance(call, ServiceCallers) for call in dependencies(route.dependant))
    ]
    assert not unguarded, f"{name}: internal routes open to any service: {unguarded}"
    guarded = any(m.cls is ServiceCredentialMiddleware for m in app.user_middleware)
    assert guarded == bool(internal), f"{name}: service credential middleware {guarded}"
