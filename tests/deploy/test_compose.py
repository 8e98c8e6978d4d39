"""docker-compose.yml, as Debian's docker-compose reads it (no Docker engine needed)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.deploy.manifests import (
    COMPOSE_ENVIRONMENT,
    NOT_YET_DEPLOYED,
    PORTS,
    REPO,
    SPECS,
    build_arguments,
    compose_package,
    compose_run,
    docker_compose,
    image_tag,
)
from tests.test_service_shape import settings_variables

STORES = ("postgres", "rabbitmq", "redis")


def ours(config: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Compose services running one of our images: name -> (package, service)."""
    found = {}
    for name, service in config["services"].items():
        pkg = compose_package(service)
        if pkg is not None:
            found[name] = (pkg, service)
    return found


def test_config_is_valid(empty_env_file: Path) -> None:
    if docker_compose() is None:
        pytest.skip("docker-compose is not installed: run scripts/ensure-deploy-tools.sh")
    result = compose_run("config", "-q", environment=COMPOSE_ENVIRONMENT, env_file=empty_env_file)
    assert result.returncode == 0, result.stderr


def test_the_admin_password_has_no_default(empty_env_file: Path) -> None:
    if docker_compose() is None:
        pytest.skip("docker-compose is not installed: run scripts/ensure-deploy-tools.sh")
    result = compose_run("config", "-q", environment={}, env_file=empty_env_file)
    assert result.returncode != 0
    assert "ADMIN_PASSWORD" in result.stderr


def test_every_service_runs_with_its_migration_first(compose_config: dict[str, Any]) -> None:
    services = compose_config["services"]
    running = {name: pkg for name, (pkg, _) in ours(compose_config).items()}
    assert set(running.values()) == set(SPECS), "every service of the topology, once"
    for pkg, spec in SPECS.items():
        service = services[pkg]
        assert compose_package(service) == pkg
        if spec.migrations is None:
            continue
        migrate = services[f"{pkg}-migrate"]
        assert migrate["image"] == service["image"], "the migration runs the service's image"
        # The migration waits for a database that is not accepting connections yet.
        assert migrate["command"] == ["migrate", spec.migrations]
        assert migrate["restart"] == "no"
        assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert service["depends_on"][f"{pkg}-migrate"] == {
            "condition": "service_completed_successfully"
        }
        assert service["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
        assert migrate["environment"]["DATABASE_URL"] == service["environment"]["DATABASE_URL"]


def test_every_image_is_built_from_the_one_dockerfile(compose_config: dict[str, Any]) -> None:
    for name, (pkg, service) in ours(compose_config).items():
        build = service["build"]
        assert Path(build["context"]) == REPO, name
        assert build["dockerfile"] == "Dockerfile", name
        assert build["args"] == build_arguments(pkg), name


def test_postgres_counts_as_healthy_only_once_it_accepts_tcp(
    compose_config: dict[str, Any],
) -> None:
    """On a fresh volume the server first runs the init scripts listening on its socket
    only: a check over the socket passes before any service can connect."""
    test = compose_config["services"]["postgres"]["healthcheck"]["test"]
    # CMD-SHELL: podman's Docker API splits an exec-form test whose arguments hold spaces.
    assert test[0] == "CMD-SHELL"
    command = shlex.split(test[1])
    assert command[0] == "pg_isready"
    assert command[command.index("-h") + 1] in ("127.0.0.1", "localhost"), command


def test_health_checks_survive_podmans_docker_api(compose_config: dict[str, Any]) -> None:
    """Podman 4.3's Docker API splits an exec-form (`CMD`) test at spaces inside its
    arguments: such a test must be written as CMD-SHELL."""
    for name, service in compose_config["services"].items():
        test = (service.get("healthcheck") or {}).get("test")
        if test and test[0] == "CMD":
            assert not [arg for arg in test[1:] if " " in arg], name


def test_stores_are_healthchecked_and_waited_for(compose_config: dict[str, Any]) -> None:
    services = compose_config["services"]
    for store in STORES:
        assert services[store]["healthcheck"]["test"], store
    assert services["api_gateway"]["depends_on"]["redis"]["condition"] == "service_healthy"
    nginx = services["nginx"]
    assert nginx["depends_on"]["api_gateway"]["condition"] == "service_healthy"
    assert f"{REPO / 'nginx.conf'}:/etc/nginx/nginx.conf:ro" in nginx["volumes"]
    assert nginx["ports"] == [{"published": 80, "target": 80}]
    assert "edge" in nginx["networks"]
    assert "backend" not in nginx["networks"], "nginx reaches only the gateway"


def test_images_are_pinned(compose_config: dict[str, Any]) -> None:
    for name, service in compose_config["services"].items():
        assert image_tag(service["image"]) not in (None, "latest"), name
    expected = {"postgres": "16", "rabbitmq": "3.13-management", "redis": "7", "nginx": "1.27"}
    for name, tag in expected.items():
        assert image_tag(compose_config["services"][name]["image"]) == tag


def test_our_containers_are_locked_down(compose_config: dict[str, Any]) -> None:
    for name, (_, service) in ours(compose_config).items():
        assert service.get("read_only") is True, name
        assert "ALL" in service.get("cap_drop", []), name
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        assert "/tmp" in service.get("tmpfs", []), name  # noqa: S108 - the container's tmpfs
        assert "ports" not in service, f"{name} is reached through nginx only"


def test_services_get_only_variables_their_settings_read(compose_config: dict[str, Any]) -> None:
    for name, (pkg, service) in ours(compose_config).items():
        environment = set(service.get("environment", {}))
        unknown = {v for v in environment if v.upper() not in settings_variables(pkg)}
        assert not unknown, f"{name} sets variables {pkg} does not read: {sorted(unknown)}"
        assert "env_file" not in service, "only what is listed here reaches a container"
        if SPECS[pkg].migrations:
            assert {"DATABASE_URL", "RABBITMQ_URL"} <= environment, name
            assert urlsplit(service["environment"]["DATABASE_URL"]).path == f"/{pkg}"
        assert service["environment"]["ENVIRONMENT"] == "development"


def test_every_database_is_created(compose_config: dict[str, Any]) -> None:
    postgres = compose_config["services"]["postgres"]
    created = set(postgres["environment"]["SERVICE_DATABASES"].replace(",", " ").split())
    assert created == {pkg for pkg, spec in SPECS.items() if spec.migrations}
    assert any(
        "init-databases.sh" in str(volume) and "docker-entrypoint-initdb.d" in str(volume)
        for volume in postgres["volumes"]
    )


def test_service_urls_name_compose_services_on_their_ports(compose_config: dict[str, Any]) -> None:
    services = compose_config["services"]
    for name, (_, service) in ours(compose_config).items():
        for variable, value in service.get("environment", {}).items():
            if not variable.endswith("_SERVICE_URL"):
                continue
            target = variable.removesuffix("_URL").lower()
            url = urlsplit(str(value))
            if target in NOT_YET_DEPLOYED:
                continue
            assert url.hostname == target, f"{name}: {variable}={value}"
            assert target in services, f"{name}: {variable}={value}"
            assert url.port == PORTS[target], f"{name}: {variable}={value}"
