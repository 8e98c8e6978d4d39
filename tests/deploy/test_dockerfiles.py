"""Each service's Dockerfile: the rules a reviewer (or hadolint) would hold it to, and its
builder stage run for real with uv (no Docker engine here) to prove the image holds what
the CMD and the migration command need."""

from __future__ import annotations

import importlib
import json
import os
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.deploy.manifests import (
    PORTS,
    REPO,
    SPECS,
    Stage,
    dist_name,
    dockerignore_patterns,
    dockerignored,
    image_tag,
    parse_dockerfile,
)

PACKAGES = sorted(SPECS)
WORKSPACE_MEMBERS = {dist_name(pkg) for pkg in PACKAGES}
DEV_TOOLS = {"pytest", "mypy", "ruff", "kubernetes-validate"}


def stages(pkg: str) -> list[Stage]:
    path = REPO / pkg / "Dockerfile"
    assert path.is_file(), f"{pkg} has no Dockerfile"
    return parse_dockerfile(path)


def shared_libraries(pkg: str) -> list[str]:
    """The folders of the shared libraries (shared/<name>) the service depends on."""
    project = tomllib.loads((REPO / pkg / "pyproject.toml").read_text())["project"]
    names = {
        dependency.split(">")[0].split("[")[0].strip() for dependency in project["dependencies"]
    }
    return [
        str(folder.relative_to(REPO))
        for folder in sorted((REPO / "shared").iterdir())
        if (folder / "pyproject.toml").is_file()
        and dist_name(str(folder.relative_to(REPO))) in names
    ]


def has_migrations(pkg: str) -> bool:
    return SPECS[pkg].migrations is not None


def uv_syncs(stage: Stage) -> list[list[str]]:
    commands = []
    for run in stage.all("RUN"):
        for command in run.arguments.split("&&"):
            tokens = shlex.split(command)
            while tokens and tokens[0].startswith("--mount"):
                tokens.pop(0)
            if tokens[:2] == ["uv", "sync"]:
                commands.append(tokens)
    return commands


@pytest.mark.parametrize("pkg", PACKAGES)
class TestDockerfileRules:
    def test_two_stages_on_python_311_slim(self, pkg: str) -> None:
        builder, runtime = stages(pkg)
        for stage in (builder, runtime):
            assert stage.image.startswith("python:3.11-slim"), stage.image
        assert builder.name == "builder"

    def test_every_image_is_pinned_to_a_tag_that_is_not_latest(self, pkg: str) -> None:
        references = []
        for stage in stages(pkg):
            references.append(stage.image)
            references += [
                copy.flags["from"]
                for copy in stage.all("COPY")
                if "from" in copy.flags and ("/" in copy.flags["from"] or ":" in copy.flags["from"])
            ]
        for reference in references:
            tag = image_tag(reference)
            assert tag not in (None, "latest"), f"{reference} is not pinned"

    def test_uv_comes_from_its_pinned_image(self, pkg: str) -> None:
        builder = stages(pkg)[0]
        sources = [copy.flags.get("from", "") for copy in builder.all("COPY")]
        assert any(source.startswith("ghcr.io/astral-sh/uv:") for source in sources)

    def test_only_this_service_and_shared_are_synced_from_the_frozen_lock(self, pkg: str) -> None:
        syncs = uv_syncs(stages(pkg)[0])
        assert syncs, "the builder runs no `uv sync`"
        for command in syncs:
            assert "--frozen" in command or "--locked" in command, command
            assert "--no-dev" in command, command
            assert command[command.index("--package") + 1] == dist_name(pkg), command
        # Dependencies first (cached layer), then the workspace packages as wheels.
        assert "--no-install-workspace" in syncs[0]
        assert "--no-editable" in syncs[-1]

    def test_builder_copies_only_the_lock_the_pyprojects_shared_and_this_service(
        self, pkg: str
    ) -> None:
        libraries = shared_libraries(pkg)
        allowed = {
            "uv.lock",
            "pyproject.toml",
            f"{pkg}/pyproject.toml",
            f"{pkg}/src",
            *(f"{folder}/pyproject.toml" for folder in libraries),
            *(f"{folder}/src" for folder in libraries),
        }
        copied = {
            source
            for copy in stages(pkg)[0].all("COPY")
            if "from" not in copy.flags
            for source in copy.operands[:-1]
        }
        assert copied <= allowed, copied - allowed
        assert {"uv.lock", f"{pkg}/src", *(f"{folder}/src" for folder in libraries)} <= copied

    def test_runtime_holds_only_the_venv_and_the_migrations(self, pkg: str) -> None:
        runtime = stages(pkg)[1]
        from_builder = [c for c in runtime.all("COPY") if c.flags.get("from") == "builder"]
        assert [c.operands for c in from_builder] == [["/app/.venv", "/app/.venv"]]
        from_context = {tuple(c.operands) for c in runtime.all("COPY") if "from" not in c.flags}
        expected = (
            {
                (f"{pkg}/alembic.ini", f"{pkg}/alembic.ini"),
                (f"{pkg}/migrations", f"{pkg}/migrations"),
            }
            if has_migrations(pkg)
            else set()
        )
        assert from_context == expected
        assert not runtime.all("ADD")

    def test_runtime_runs_as_uid_10001(self, pkg: str) -> None:
        runtime = stages(pkg)[1]
        users = runtime.all("USER")
        assert users, "no USER: the process would run as root"
        assert users[-1].operands[0].split(":")[0] == "10001"
        created = " ".join(run.arguments for run in runtime.all("RUN"))
        assert "--uid 10001" in created
        # Nothing after USER may need root.
        last_user = runtime.instructions.index(users[-1])
        assert not [i for i in runtime.instructions[last_user:] if i.keyword == "RUN"]

    def test_cmd_is_one_uvicorn_process_of_the_service_factory(self, pkg: str) -> None:
        runtime = stages(pkg)[1]
        (cmd,) = runtime.all("CMD")
        assert cmd.arguments.startswith("["), "CMD must be exec form (signals reach uvicorn)"
        args = cmd.operands
        assert args[:3] == ["uvicorn", "--factory", SPECS[pkg].app]
        assert args[args.index("--host") + 1] == "0.0.0.0"  # noqa: S104 - in a container
        assert int(args[args.index("--port") + 1]) == PORTS[pkg]
        assert "--no-access-log" in args
        assert "--workers" not in args, "scale with replicas, not workers"
        if pkg == "api_gateway":
            # The gateway itself decides which X-Forwarded-For hops to believe.
            assert "--no-proxy-headers" in args
        else:
            assert "--proxy-headers" in args
            assert "--forwarded-allow-ips=*" in args
        assert [e.operands for e in runtime.all("EXPOSE")] == [[str(PORTS[pkg])]]
        assert not runtime.all("ENTRYPOINT")

    def test_cmd_factory_is_importable(self, pkg: str) -> None:
        module, factory = SPECS[pkg].app.split(":")
        assert callable(getattr(importlib.import_module(module), factory))

    def test_healthcheck_asks_health_live_with_python(self, pkg: str) -> None:
        (check,) = stages(pkg)[1].all("HEALTHCHECK")
        command = check.arguments[check.arguments.index("CMD") + 3 :].strip()
        args = json.loads(command)
        assert args[:2] == ["python", "-c"]
        assert f"http://127.0.0.1:{PORTS[pkg]}/health/live" in args[2]
        compile(args[2], "<healthcheck>", "exec")

    def test_nothing_copied_is_left_out_of_the_build_context(self, pkg: str) -> None:
        patterns = dockerignore_patterns()
        for stage in stages(pkg):
            for copy in stage.all("COPY"):
                if "from" in copy.flags:
                    continue
                for source in copy.operands[:-1]:
                    assert (REPO / source).exists(), source
                    assert not dockerignored(source, patterns), f"{source} is in .dockerignore"


def test_dockerignore_keeps_secrets_and_local_state_out() -> None:
    patterns = dockerignore_patterns()
    for path in (".env", ".git/config", ".venv/bin/python", ".data/users.db",
                 "user_service/tests/test_api.py", "shared/kit/src/shared/__pycache__/x.pyc",
                 "deploy/key.pem", "dev/devstack/src/devstack/stack.py"):  # fmt: skip
        assert dockerignored(path, patterns), path
    for path in ("uv.lock", "shared/kit/src/shared/config.py", "user_service/migrations/env.py"):
        assert not dockerignored(path, patterns), path


# --- the builder stage, run for real -------------------------------------------------------


def emulate_builder(pkg: str, root: Path) -> Path:
    """Run the builder stage's ENV, WORKDIR, COPY and RUN instructions with `root`
    standing in for `/` (this machine's uv instead of the copied binary, its cache
    instead of the cache mount). Returns the built virtual environment."""
    # `uv run` says where its binary is in UV; the Makefile may run uv as `python3 -m uv`.
    uv = os.environ.get("UV") or shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not on PATH and the tests were not started by `uv run`")
    builder = stages(pkg)[0]
    # This machine's uv settings (cache, index) apply; the Dockerfile's ENV overrides.
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    workdir = Path("/")

    def inside(path: str) -> Path:
        return root / (workdir / path).relative_to("/")

    for instruction in builder.instructions:
        if instruction.keyword == "ENV":
            for assignment in shlex.split(instruction.arguments):
                key, _, value = assignment.partition("=")
                env[key] = str(root) + value if value.startswith("/") else value
        elif instruction.keyword == "WORKDIR":
            workdir = workdir / instruction.operands[0]
            inside(".").mkdir(parents=True, exist_ok=True)
        elif instruction.keyword == "COPY":
            if "from" in instruction.flags:
                continue  # the uv binary
            *sources, destination = instruction.operands
            target = inside(destination)
            for source in sources:
                origin = REPO / source
                into = target / origin.name if destination.endswith("/") else target
                into.parent.mkdir(parents=True, exist_ok=True)
                if origin.is_dir():
                    shutil.copytree(
                        origin, into, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
                    )
                else:
                    shutil.copy2(origin, into)
        elif instruction.keyword == "RUN":
            tokens = shlex.split(instruction.arguments)
            while tokens and tokens[0].startswith("--mount"):
                tokens.pop(0)
            assert tokens[:2] == ["uv", "sync"], f"cannot emulate RUN {instruction.arguments}"
            result = subprocess.run(
                [uv, *tokens[1:]],
                cwd=inside("."),
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            assert result.returncode == 0, f"{' '.join(tokens)}:\n{result.stderr}"
    venv = Path(env["UV_PROJECT_ENVIRONMENT"])
    assert venv.is_relative_to(root)
    return venv


def in_venv(venv: Path, code: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code],
        cwd=cwd,
        env={"PATH": f"{venv / 'bin'}:/usr/bin:/bin", **(env or {})},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("pkg", PACKAGES)
def test_built_image_runs_the_service_and_its_migrations(pkg: str, tmp_path: Path) -> None:
    venv = emulate_builder(pkg, tmp_path / "builder")
    installed = set(
        json.loads(
            in_venv(
                venv,
                "import json, importlib.metadata as m;"
                "print(json.dumps([d.metadata['Name'] for d in m.distributions()]))",
                tmp_path,
            )
        )
    )
    assert {dist_name(pkg), "shared", "uvicorn", "alembic"} <= installed
    assert not (installed & (WORKSPACE_MEMBERS - {dist_name(pkg)})), "other services installed"
    assert not (installed & DEV_TOOLS), "development tools installed"
    assert not (installed & {"devstack", "service-testing"}), "the runner or test support installed"

    # The runtime stage: the venv and, for a service with a database, its migrations.
    app = tmp_path / "app"
    app.mkdir()
    for copy in stages(pkg)[1].all("COPY"):
        if "from" not in copy.flags:
            source, destination = copy.operands
            (app / destination).parent.mkdir(parents=True, exist_ok=True)
            if (REPO / source).is_dir():
                shutil.copytree(REPO / source, app / destination)
            else:
                shutil.copy2(REPO / source, app / destination)
    module, factory = SPECS[pkg].app.split(":")
    where = in_venv(
        venv,
        f"import {module} as m, shared; assert callable(m.{factory});"
        "import importlib.util as u;"
        "assert u.find_spec('devstack') is None and u.find_spec('service_testing') is None;"
        "print(m.__file__, shared.__file__)",
        app,
    )
    for file in where.split():
        assert Path(file).is_relative_to(venv), f"{file} is not installed in the venv"
    assert (venv / "bin" / "uvicorn").is_file()

    if has_migrations(pkg):
        database = tmp_path / "migrated.db"
        result = subprocess.run(
            [str(venv / "bin" / "alembic"), "-c", f"{pkg}/alembic.ini", "upgrade", "head"],
            cwd=app,
            env={
                "PATH": f"{venv / 'bin'}:/usr/bin:/bin",
                "DATABASE_URL": f"sqlite+aiosqlite:///{database}",
                "DATA_DIR": str(tmp_path),
            },
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert database.stat().st_size > 0


def test_every_service_of_the_topology_has_an_image() -> None:
    dockerfiles = {path.parent.name for path in REPO.glob("*/Dockerfile")}
    assert dockerfiles == set(SPECS), "a Dockerfile per service in devstack.SERVICES"
