"""The one Dockerfile, as it builds each service's image: the rules a reviewer (or
hadolint) would hold it to. The images are built and run for real under podman in
tests/deploy/test_compose_stack.py."""

from __future__ import annotations

import shlex

import pytest

from shared.eventloop import UVICORN_LOOP
from tests.deploy.manifests import (
    DOCKERFILE,
    PORTS,
    REPO,
    SPECS,
    Stage,
    build_arguments,
    dist_name,
    dockerignore_patterns,
    dockerignored,
    image_tag,
    parse_dockerfile,
)

PACKAGES = sorted(SPECS)


def stages(pkg: str) -> list[Stage]:
    return parse_dockerfile(DOCKERFILE, build_arguments(pkg))


def normalized(name: str) -> str:
    """A distribution name as uv compares it (PEP 503)."""
    return name.lower().replace("_", "-").replace(".", "-")


def uv_syncs(stage: Stage, pkg: str) -> list[list[str]]:
    commands = []
    for run in stage.all("RUN"):
        for command in run.arguments.split("&&"):
            tokens = shlex.split(command.replace("${SERVICE}", pkg))
            while tokens and tokens[0].startswith("--mount"):
                tokens.pop(0)
            if tokens[:2] == ["uv", "sync"]:
                commands.append(tokens)
    return commands


def environment(stage: Stage) -> dict[str, str]:
    found = {}
    for instruction in stage.all("ENV"):
        for assignment in shlex.split(instruction.arguments):
            key, _, value = assignment.partition("=")
            found[key] = value
    return found


def test_there_is_one_dockerfile() -> None:
    assert sorted(str(p.relative_to(REPO)) for p in REPO.glob("**/Dockerfile")
                  if ".venv" not in p.parts) == ["Dockerfile"]  # fmt: skip


def test_users_keep_python_311_slim_and_uvs_pinned_image_by_default() -> None:
    defaults = parse_dockerfile(DOCKERFILE)
    uv, builder, runtime = defaults
    assert uv.image.startswith("ghcr.io/astral-sh/uv:")
    for stage in (builder, runtime):
        assert stage.image.startswith("python:3.11-slim"), stage.image
    assert (uv.name, builder.name) == ("uv", "builder")


@pytest.mark.parametrize("pkg", PACKAGES)
class TestDockerfileRules:
    def test_base_images_come_from_build_arguments(self, pkg: str) -> None:
        arguments = {**build_arguments(pkg), "BASE_IMAGE": "debian-python:1", "UV_IMAGE": "uv:2"}
        uv, builder, runtime = parse_dockerfile(DOCKERFILE, arguments)
        assert (uv.image, builder.image, runtime.image) == ("uv:2", "debian-python:1",
                                                            "debian-python:1")  # fmt: skip

    def test_every_image_is_pinned_to_a_tag_that_is_not_latest(self, pkg: str) -> None:
        for stage in stages(pkg):
            assert image_tag(stage.image) not in (None, "latest"), f"{stage.image} is not pinned"

    def test_uv_comes_from_its_pinned_image(self, pkg: str) -> None:
        builder = stages(pkg)[1]
        sources = [copy.flags.get("from", "") for copy in builder.all("COPY")]
        assert "uv" in sources

    def test_only_this_service_is_synced_from_the_frozen_lock(self, pkg: str) -> None:
        syncs = uv_syncs(stages(pkg)[1], pkg)
        assert syncs, "the builder runs no `uv sync`"
        for command in syncs:
            assert "--frozen" in command or "--locked" in command, command
            assert "--no-dev" in command, command
            package = command[command.index("--package") + 1]
            assert normalized(package) == normalized(dist_name(pkg)), command
        # Dependencies first (cached layer), then the workspace packages as wheels.
        assert "--no-install-workspace" in syncs[0]
        assert "--no-editable" in syncs[-1]

    def test_the_dependency_layer_is_keyed_on_the_lock_alone(self, pkg: str) -> None:
        builder = stages(pkg)[1]
        first_sync = next(i for i, instruction in enumerate(builder.instructions)
                          if instruction.keyword == "RUN")  # fmt: skip
        copied = {
            source
            for copy in builder.instructions[:first_sync]
            if copy.keyword == "COPY" and "from" not in copy.flags
            for source in copy.operands[:-1]
        }
        assert copied == {"uv.lock", "pyproject.toml"}

    def test_runtime_holds_only_the_app_and_the_migration_command(self, pkg: str) -> None:
        runtime = stages(pkg)[2]
        from_builder = [c for c in runtime.all("COPY") if c.flags.get("from") == "builder"]
        assert [c.operands for c in from_builder] == [["/app", "/app"]]
        from_context = [c.operands for c in runtime.all("COPY") if "from" not in c.flags]
        assert from_context == [["deploy/migrate.sh", "/usr/local/bin/migrate"]]
        assert not runtime.all("ADD")

    def test_runtime_runs_as_uid_10001(self, pkg: str) -> None:
        runtime = stages(pkg)[2]
        users = runtime.all("USER")
        assert users, "no USER: the process would run as root"
        assert users[-1].operands[0].split(":")[0] == "10001"
        created = " ".join(run.arguments for run in runtime.all("RUN"))
        assert "--uid 10001" in created
        # Nothing after USER may need root.
        last_user = runtime.instructions.index(users[-1])
        assert not [i for i in runtime.instructions[last_user:] if i.keyword == "RUN"]

    def test_cmd_is_one_uvicorn_process_of_the_service_factory(self, pkg: str) -> None:
        runtime = stages(pkg)[2]
        (cmd,) = runtime.all("CMD")
        assert cmd.arguments.startswith("["), "CMD must be exec form (signals reach uvicorn)"
        assert cmd.operands == ["uvicorn"]
        assert not runtime.all("ENTRYPOINT")
        # uvicorn takes its command line from these (click's UVICORN_ prefix).
        env = environment(runtime)
        assert env["UVICORN_APP"] == SPECS[pkg].app
        assert env["UVICORN_FACTORY"] == "true"
        assert env["UVICORN_HOST"] == "0.0.0.0"  # noqa: S104 - in a container
        assert int(env["UVICORN_PORT"]) == PORTS[pkg]
        assert env["UVICORN_ACCESS_LOG"] == "false"
        assert env["UVICORN_LOOP"] == UVICORN_LOOP  # uvloop, accepting in batches
        assert "UVICORN_WORKERS" not in env, "scale with replicas, not workers"
        if pkg == "api_gateway":
            # The gateway itself decides which X-Forwarded-For hops to believe.
            assert env["UVICORN_PROXY_HEADERS"] == "false"
        else:
            assert env["UVICORN_PROXY_HEADERS"] == "true"
            assert env["UVICORN_FORWARDED_ALLOW_IPS"] == "*"
        assert [e.operands for e in runtime.all("EXPOSE")] == [[str(PORTS[pkg])]]

    def test_healthcheck_asks_health_live_with_python(self, pkg: str) -> None:
        (check,) = stages(pkg)[2].all("HEALTHCHECK")
        command = shlex.split(check.arguments[check.arguments.index("CMD") + 3 :])
        assert command[:2] == ["python", "-c"]
        assert "http://127.0.0.1:" in command[2]
        assert "/health/live" in command[2]
        assert "UVICORN_PORT" in command[2]
        compile(command[2], "<healthcheck>", "exec")

    def test_nothing_copied_is_left_out_of_the_build_context(self, pkg: str) -> None:
        patterns = dockerignore_patterns()
        for stage in stages(pkg):
            for copy in stage.all("COPY"):
                if "from" in copy.flags:
                    continue
                for source in copy.operands[:-1]:
                    assert (REPO / source).exists(), source
                    if source != ".":
                        assert not dockerignored(source, patterns), f"{source} is ignored"


def test_dockerignore_keeps_secrets_and_local_state_out() -> None:
    patterns = dockerignore_patterns()
    for path in (".env", ".git/config", ".venv/bin/python", ".data/users.db",
                 "user_service/tests/test_api.py", "shared/kit/src/shared/__pycache__/x.pyc",
                 "deploy/key.pem", "dev/devstack/src/devstack/stack.py"):  # fmt: skip
        assert dockerignored(path, patterns), path
    for path in ("uv.lock", "shared/kit/src/shared/config.py", "user_service/migrations/env.py"):
        assert not dockerignored(path, patterns), path
