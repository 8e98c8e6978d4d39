"""What a service's production install holds, read from the lock the images are built
from (`uv sync --frozen --no-dev --package <service>`): its own package, the runtime kit
and, only when it publishes or consumes events, the events package. The local stack
runner and the test support are development tools: no production install has them."""

from __future__ import annotations

import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from devstack import SERVICES, ServiceSpec

REPO = Path(__file__).resolve().parents[1]
#: Workspace members only development installs: the runner and the pytest plugin.
DEVELOPMENT_ONLY = {"dev/devstack", "dev/service_testing"}


def dist_name(package: str) -> str:
    name: str = tomllib.loads((REPO / package / "pyproject.toml").read_text())["project"]["name"]
    return name


def production_members(spec: ServiceSpec) -> set[str]:
    """The workspace members (folders) a production install of `spec` contains."""
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not on PATH and the tests were not started by `uv run`")
    export = ["export", "--frozen", "--no-dev", "--no-hashes", "--no-header"]
    result = subprocess.run(
        [*uv.split(), *export, "--package", dist_name(spec.package)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return {
        line.removeprefix("-e ./").strip()
        for line in result.stdout.splitlines()
        if line.startswith("-e ./")
    }


def uses_events(spec: ServiceSpec) -> bool:
    """Whether the service's code imports the events package."""
    sources = (REPO / spec.package / "src").rglob("*.py")
    return any("eventbus" in path.read_text() for path in sources)


@pytest.mark.parametrize("spec", SERVICES, ids=[spec.name for spec in SERVICES])
def test_a_production_install_holds_no_runner_and_no_test_support(spec: ServiceSpec) -> None:
    members = production_members(spec)
    assert not members & DEVELOPMENT_ONLY, members & DEVELOPMENT_ONLY
    expected = {spec.package, "shared/kit"} | ({"shared/eventbus"} if uses_events(spec) else set())
    assert members == expected


def test_the_runtime_libraries_do_not_import_the_development_tools() -> None:
    for library in ("shared/kit", "shared/eventbus"):
        for path in (REPO / library / "src").rglob("*.py"):
            text = path.read_text()
            for tool in ("devstack", "service_testing"):
                assert f"import {tool}" not in text, path
                assert f"from {tool}" not in text, path
