"""The deployment files, rendered once per test session by the real tools."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.manifests import (
    COMPOSE_ENVIRONMENT,
    OVERLAYS,
    compose_run,
    docker_compose,
    kubectl,
    kustomize,
)


@pytest.fixture(scope="session")
def empty_env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Stands in for a developer's `.env`, so the tests see only the file's defaults."""
    path = tmp_path_factory.mktemp("compose") / "empty.env"
    path.write_text("")
    return path


@pytest.fixture(scope="session")
def compose_config(empty_env_file: Path) -> dict[str, Any]:
    """docker-compose.yml as docker-compose resolves it (anchors merged, variables
    interpolated)."""
    if docker_compose() is None:
        pytest.skip(
            "docker-compose is not installed: scripts/ensure-deploy-tools.sh installs "
            "Debian's (make test runs it)"
        )
    result = compose_run("config", environment=COMPOSE_ENVIRONMENT, env_file=empty_env_file)
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


@pytest.fixture(scope="session")
def overlays() -> dict[str, list[dict[str, Any]]]:
    """Every object of each overlay, as `kubectl kustomize` builds it."""
    if kubectl() is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed")
    return {overlay: kustomize(overlay) for overlay in OVERLAYS}
