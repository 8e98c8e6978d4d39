"""The local stack runner (like eShop's AppHost): every process of the system, its port,
migrations and seed, started for `make run`, the end-to-end tests and the benchmarks.
Development only: no service depends on it, so no image contains it."""

from devstack.stack import (
    DEMO_STOCK,
    REPO_ROOT,
    SERVICES,
    ServiceSpec,
    Stack,
    migrate_and_seed,
    running_stack,
    service_env,
    stack_environment,
    start_process,
    stock_demo_catalog,
    stop,
    wait_ready,
)

__all__ = [
    "DEMO_STOCK",
    "REPO_ROOT",
    "SERVICES",
    "ServiceSpec",
    "Stack",
    "migrate_and_seed",
    "running_stack",
    "service_env",
    "stack_environment",
    "start_process",
    "stock_demo_catalog",
    "stop",
    "wait_ready",
]
