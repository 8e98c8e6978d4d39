"""Reading the deployment files the way the tools do: Dockerfiles instruction by
instruction, docker-compose.yml through `docker-compose config`, the Kubernetes
overlays through `kubectl kustomize`, and NetworkPolicies evaluated like a CNI would."""

from __future__ import annotations

import base64
import json
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from devstack import SERVICES, ServiceSpec

REPO = Path(__file__).resolve().parents[2]
OVERLAYS = ("dev", "prod")
#: The value every committed Secret holds instead of a secret.
PLACEHOLDER = "CHANGE_ME"
#: Services the gateway already routes to but that are not deployed yet: their URL may
#: name a host that does not exist (the gateway answers 503 for them until they do).
NOT_YET_DEPLOYED: frozenset[str] = frozenset()
#: What `docker-compose config` needs besides the file's defaults (its one `${VAR:?}`).
COMPOSE_ENVIRONMENT = {"ADMIN_PASSWORD": "a-compose-test-password"}


# --- the services ----------------------------------------------------------------------


def package(spec: ServiceSpec) -> str:
    return spec.app.split(".")[0]


def dist_name(pkg: str) -> str:
    """The distribution name `uv sync --package` takes (`user-service`)."""
    project = tomllib.loads((REPO / pkg / "pyproject.toml").read_text())["project"]
    name: str = project["name"]
    return name


def kube_name(pkg: str) -> str:
    return pkg.replace("_", "-")


SPECS: dict[str, ServiceSpec] = {package(spec): spec for spec in SERVICES}
PORTS: dict[str, int] = {pkg: spec.port for pkg, spec in SPECS.items()}


# --- Dockerfiles -----------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    arguments: str
    line: int

    @property
    def flags(self) -> dict[str, str]:
        """`--from=builder --chown=x` -> {"from": "builder", "chown": "x"}."""
        found = {}
        for token in shlex.split(self.arguments):
            if not token.startswith("--"):
                break
            name, _, value = token[2:].partition("=")
            found[name] = value
        return found

    @property
    def operands(self) -> list[str]:
        """The arguments after the flags (exec-form JSON arrays decoded)."""
        text = self.arguments.strip()
        if text.startswith("["):
            decoded: list[str] = json.loads(text)
            return decoded
        tokens = shlex.split(text)
        while tokens and tokens[0].startswith("--"):
            tokens.pop(0)
        return tokens


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


#: The one Dockerfile of every service's image.
DOCKERFILE = REPO / "Dockerfile"


def build_arguments(pkg: str) -> dict[str, str]:
    """The build arguments that make the Dockerfile build `pkg`'s image (docker-compose.yml
    passes these; tests/deploy/test_compose.py checks it)."""
    arguments = {"SERVICE": pkg, "PORT": str(PORTS[pkg])}
    if pkg == "api_gateway":
        arguments["PROXY_HEADERS"] = "false"
    return arguments


def substitute(text: str, arguments: Mapping[str, str]) -> str:
    """`${NAME}` and `$NAME` replaced by the build argument's value, as the builder does
    in FROM, COPY, ENV, EXPOSE and the like."""
    return re.sub(
        r"\$\{(\w+)\}|\$(\w+)",
        lambda m: arguments.get(m.group(1) or m.group(2), m.group(0)),
        text,
    )


def parse_dockerfile(path: Path, arguments: Mapping[str, str] | None = None) -> list[Stage]:
    """Stages of a Dockerfile, with continuation lines joined and comments dropped, and
    build arguments (`arguments` over the ARG defaults) substituted in every instruction
    but RUN, CMD and HEALTHCHECK (a shell or the process reads those at run time)."""
    given = dict(arguments or {})
    values: dict[str, str] = {}
    stages: list[Stage] = []
    logical = ""
    start = 0
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        stripped = raw.strip()
        if not logical and (not stripped or stripped.startswith("#")):
            continue
        if logical and stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if not logical:
            start = number
        if stripped.endswith("\\"):
            logical += stripped[:-1] + " "
            continue
        logical += stripped
        keyword, _, text = logical.partition(" ")
        keyword = keyword.upper()
        logical = ""
        if keyword == "ARG":
            name, _, default = text.strip().partition("=")
            values[name] = given.get(name, substitute(default, values))
            continue
        if keyword not in ("RUN", "CMD", "HEALTHCHECK"):
            text = substitute(text, values)
        instruction = Instruction(keyword, text.strip(), start)
        if instruction.keyword == "FROM":
            parts = instruction.arguments.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(parts[0], name))
        elif not stages:
            raise ValueError(f"{path}:{start}: {keyword} before the first FROM")
        else:
            stages[-1].instructions.append(instruction)
    return stages


def image_tag(reference: str) -> str | None:
    """The tag of `name[:tag][@digest]`, None when there is none."""
    name = reference.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def dockerignore_patterns() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def dockerignored(path: str, patterns: Iterable[str]) -> bool:
    """Whether the build context leaves `path` out (.dockerignore's Go filepath.Match
    rules with `**`, good enough for the patterns used here; `!` re-includes)."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _dockerignore_regex(pattern.lstrip("!").strip("/"))
        parts = path.strip("/").split("/")
        # A pattern that matches a parent directory excludes everything below it.
        if any(regex.fullmatch("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            ignored = not negate
    return ignored


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out += pattern[i : end + 1]
            i = end + 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


# --- docker-compose --------------------------------------------------------------------


def docker_compose() -> str | None:
    return shutil.which("docker-compose")


def compose_run(
    *args: str, environment: Mapping[str, str], env_file: Path
) -> subprocess.CompletedProcess[str]:
    """`docker-compose <args>` on the repository's file, with only `environment` (and
    PATH) in its environment and `env_file` instead of a developer's `.env`."""
    binary = docker_compose()
    assert binary is not None
    return subprocess.run(
        [
            binary,
            "--project-directory",
            str(REPO),
            "--file",
            str(REPO / "docker-compose.yml"),
            "--env-file",
            str(env_file),
            *args,
        ],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/local/bin:/usr/bin:/bin", **environment},
        timeout=120,
        check=False,
    )


def compose_package(service: Mapping[str, Any]) -> str | None:
    """The Python package a compose service runs (its image is built from the Dockerfile
    with SERVICE=<package>), None for the stores and nginx."""
    build = service.get("build")
    if not isinstance(build, Mapping):
        return None
    package: str | None = (build.get("args") or {}).get("SERVICE")
    return package


# --- Kubernetes --------------------------------------------------------------------------


def kubectl() -> str | None:
    return shutil.which("kubectl")


def kustomize(overlay: str) -> list[dict[str, Any]]:
    return kustomize_directory(REPO / "kubernetes" / "overlays" / overlay)


def kustomize_directory(directory: Path) -> list[dict[str, Any]]:
    binary = kubectl()
    assert binary is not None
    overlay = directory.name
    result = subprocess.run(
        [binary, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"kubectl kustomize {overlay} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job")


def of_kind(docs: Iterable[dict[str, Any]], *kinds: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] in kinds]


def by_name(docs: Iterable[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def pod_spec(workload: Mapping[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = workload["spec"]["template"]["spec"]
    return spec


def image_package(image: str) -> str | None:
    """`registry/ecommerce/user-service:1.2` -> `user_service` when that is one of the
    services, None for anything else (postgres, rabbitmq)."""
    name = image.split("@", 1)[0].rsplit("/", 1)[-1].split(":", 1)[0].replace("-", "_")
    return name if name in SPECS else None


def container_environment(
    container: Mapping[str, Any], docs: Iterable[dict[str, Any]], external: Mapping[str, set[str]]
) -> dict[str, str]:
    """Every variable a container gets, mapped to where it comes from. Secrets that the
    overlay does not contain (created outside it) are looked up in `external`."""
    docs = list(docs)
    config_maps = by_name(docs, "ConfigMap")
    secrets = by_name(docs, "Secret")
    found: dict[str, str] = {}
    for item in container.get("env", []):
        found[item["name"]] = "env"
    for source in container.get("envFrom", []):
        prefix = source.get("prefix", "")
        if "configMapRef" in source:
            name = source["configMapRef"]["name"]
            keys = set(config_maps[name].get("data", {}))
            origin = f"ConfigMap {name}"
        else:
            name = source["secretRef"]["name"]
            if name in secrets:
                keys = set(secrets[name].get("data", {})) | set(secrets[name].get("stringData", {}))
            else:
                assert name in external, f"Secret {name} is neither generated nor documented"
                keys = external[name]
            origin = f"Secret {name}"
        for key in keys:
            found[prefix + key] = origin
    return found


def secret_values(secret: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    for key, value in (secret.get("data") or {}).items():
        yield key, base64.b64decode(value).decode()
    for key, value in (secret.get("stringData") or {}).items():
        yield key, str(value)


def is_placeholder(value: str) -> bool:
    """Empty, the placeholder, or a URL whose only secret part is the placeholder."""
    if value in ("", PLACEHOLDER):
        return True
    parts = urlsplit(value)
    return bool(parts.scheme and parts.netloc) and parts.password == PLACEHOLDER


# --- NetworkPolicies, evaluated ----------------------------------------------------------


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str | None  # None: outside the cluster (a managed database)
    labels: Mapping[str, str]
    ports: Mapping[str, int] = field(default_factory=dict)


NAMESPACE_LABELS = {
    "kube-system": {"kubernetes.io/metadata.name": "kube-system"},
    "ingress-nginx": {"kubernetes.io/metadata.name": "ingress-nginx"},
    "monitoring": {"kubernetes.io/metadata.name": "monitoring"},
    "default": {"kubernetes.io/metadata.name": "default"},
    "ecommerce": {"kubernetes.io/metadata.name": "ecommerce"},
}


def selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    if selector is None:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values", [])
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def _peer_matches(peer: Mapping[str, Any], policy_namespace: str, pod: Pod) -> bool:
    if "ipBlock" in peer:
        return pod.namespace is None  # pods are never matched by address here
    if pod.namespace is None:
        return False
    namespace_selector = peer.get("namespaceSelector")
    if namespace_selector is None:
        in_namespace = pod.namespace == policy_namespace
    else:
        in_namespace = selects(namespace_selector, NAMESPACE_LABELS.get(pod.namespace, {}))
    return in_namespace and selects(peer.get("podSelector"), pod.labels)


def _port_matches(rule_ports: list[dict[str, Any]] | None, destination: Pod, port: int) -> bool:
    if not rule_ports:
        return True
    for item in rule_ports:
        if item.get("protocol", "TCP") != "TCP":
            continue
        wanted = item.get("port")
        if wanted is None:
            return True
        if isinstance(wanted, str):
            wanted = destination.ports.get(wanted)
            if wanted is None:
                continue
        if wanted <= port <= item.get("endPort", wanted):
            return True
    return False


def _direction_allows(
    policies: list[dict[str, Any]],
    direction: str,
    subject: Pod,
    peer: Pod,
    destination: Pod,
    port: int,
) -> bool:
    key = "ingress" if direction == "Ingress" else "egress"
    peers_key = "from" if direction == "Ingress" else "to"
    applying = [
        policy
        for policy in policies
        if policy["metadata"]["namespace"] == subject.namespace
        and selects(policy["spec"].get("podSelector") or {}, subject.labels)
        and direction in _policy_types(policy)
    ]
    if not applying:
        return True  # no policy isolates this pod in this direction
    for policy in applying:
        for rule in policy["spec"].get(key) or []:
            peers = rule.get(peers_key)
            peer_ok = not peers or any(
                _peer_matches(p, policy["metadata"]["namespace"], peer) for p in peers
            )
            if peer_ok and _port_matches(rule.get("ports"), destination, port):
                return True
    return False


def _policy_types(policy: Mapping[str, Any]) -> list[str]:
    spec = policy["spec"]
    default = ["Ingress", "Egress"] if "egress" in spec else ["Ingress"]
    types: list[str] = spec.get("policyTypes", default)
    return types


def allowed(policies: list[dict[str, Any]], source: Pod, destination: Pod, port: int) -> bool:
    """Whether TCP traffic from `source` reaches `destination:port`."""
    egress = source.namespace is None or _direction_allows(
        policies, "Egress", source, destination, destination, port
    )
    ingress = destination.namespace is None or _direction_allows(
        policies, "Ingress", destination, source, destination, port
    )
    return egress and ingress


def workload_pods(docs: Iterable[dict[str, Any]]) -> dict[str, Pod]:
    """A pod of every workload, by its `app.kubernetes.io/name`."""
    pods = {}
    for workload in of_kind(docs, *WORKLOAD_KINDS):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        ports = {
            port["name"]: port["containerPort"]
            for container in pod_spec(workload)["containers"]
            for port in container.get("ports", [])
            if "name" in port
        }
        name = labels["app.kubernetes.io/name"]
        pods[name] = Pod(name, workload["metadata"]["namespace"], labels, ports)
    return pods


# --- what a workload is configured with, and where it leads ------------------------------

Docs = list[dict[str, Any]]
SECRETS_TEMPLATE = REPO / "kubernetes" / "overlays" / "prod" / "secrets.example.yaml"
NAMESPACE = "ecommerce"
#: The port a URL means when it names none.
DEFAULT_PORTS = {
    "http": 80,
    "https": 443,
    "postgresql": 5432,
    "postgres": 5432,
    "amqp": 5672,
    "amqps": 5671,
    "redis": 6379,
    "rediss": 6379,
}
OUTSIDE = Pod("outside", None, {})


@cache
def template_secrets() -> dict[str, dict[str, str]]:
    """The Secrets prod expects to exist, with the example values of their keys."""
    return {
        doc["metadata"]["name"]: {k: str(v) for k, v in doc.get("stringData", {}).items()}
        for doc in yaml.safe_load_all(SECRETS_TEMPLATE.read_text())
        if doc and doc["kind"] == "Secret"
    }


def secret_data(docs: Docs, name: str, overlay: str) -> dict[str, str] | None:
    secrets = by_name(docs, "Secret")
    if name in secrets:
        return dict(secret_values(secrets[name]))
    if overlay == "prod":
        return template_secrets().get(name)
    return None


def settings(container: dict[str, Any], docs: Docs, overlay: str) -> dict[str, str]:
    """Every variable the container gets, with its value."""
    config_maps = by_name(docs, "ConfigMap")
    values: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            data = config_maps[source["configMapRef"]["name"]].get("data", {})
        else:
            data = secret_data(docs, source["secretRef"]["name"], overlay) or {}
        values.update({source.get("prefix", "") + k: str(v) for k, v in data.items()})
    for item in container.get("env", []):
        if "value" in item:
            values[item["name"]] = str(item["value"])
    return values


def server_container(docs: Docs, pkg: str) -> dict[str, Any]:
    (container,) = pod_spec(by_name(docs, "Deployment")[kube_name(pkg)])["containers"]
    return container


def configured_url(docs: Docs, overlay: str, pkg: str, variable: str) -> str:
    return settings(server_container(docs, pkg), docs, overlay).get(variable, "")


def cluster_service(docs: Docs, host: str) -> dict[str, Any] | None:
    """The Service a host name resolves to in the namespace, None for a name outside the
    cluster. A bare name (or `<name>.<namespace>[.svc[.cluster.local]]`) that names no
    Service fails: inside the cluster it would not resolve."""
    parts = host.split(".")
    if host.upper() == PLACEHOLDER:  # the template's stand-in for a managed server's name
        return None
    in_cluster = len(parts) == 1 or (
        parts[1] == NAMESPACE and parts[2:] in ([], ["svc"], ["svc", "cluster", "local"])
    )
    if not in_cluster:
        return None
    services = by_name(docs, "Service")
    assert parts[0] in services, f"{host} names no Service of the namespace"
    return services[parts[0]]


def endpoint(docs: Docs, pods: dict[str, Pod], url: str) -> tuple[Pod, int]:
    """The pod and port a URL leads to: through its Service inside the cluster, or
    `OUTSIDE` on the URL's port."""
    parts = urlsplit(url)
    assert parts.hostname, url
    port = parts.port or DEFAULT_PORTS[parts.scheme.split("+")[0]]
    service = cluster_service(docs, parts.hostname)
    if service is None:
        return OUTSIDE, port
    (service_port,) = [p for p in service["spec"]["ports"] if p["port"] == port] or [None]
    assert service_port is not None, f"{url}: Service {parts.hostname} has no port {port}"
    selector = {"matchLabels": service["spec"]["selector"]}
    (pod,) = [p for p in pods.values() if selects(selector, p.labels)] or [None]
    assert pod is not None, f"{url}: Service {parts.hostname} selects no workload"
    target = service_port.get("targetPort", port)
    return pod, pod.ports[target] if isinstance(target, str) else target
