"""What `kubectl apply --dry-run=server` would not catch either, read from the built
overlays: every URL a workload is configured with leads to a Service that exists (or out
of the cluster) on a port its NetworkPolicy lets it reach, every ConfigMap, Secret, key
and ServiceAccount a pod names exists, probes ask routes the app serves, Argo CD applies
what a hook reads before the hook and a server after its migration, the database
connections fit the server, and the edge headers match nginx.conf's."""

from __future__ import annotations

import asyncio
import math
import os
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.deploy.manifests import (
    NAMESPACE,
    OVERLAYS,
    REPO,
    SPECS,
    allowed,
    by_name,
    endpoint,
    image_package,
    kube_name,
    kustomize_directory,
    of_kind,
    pod_spec,
    secret_data,
    selects,
    server_container,
    settings,
    template_secrets,
    workload_pods,
)
from tests.test_service_shape import apps

Docs = list[dict[str, Any]]

MAX_CONNECTIONS = "ecommerce.example.com/database-max-connections"
#: Connections PostgreSQL keeps for superusers (superuser_reserved_connections) and a
#: few more for an operator's psql and the monitoring.
RESERVED_CONNECTIONS = 3 + 5


def urls(values: dict[str, str]) -> Iterator[tuple[str, str]]:
    for variable, value in sorted(values.items()):
        if "://" in value:
            yield variable, value


def pod_specs(docs: Docs) -> Iterator[tuple[str, dict[str, Any]]]:
    for workload in of_kind(docs, "Deployment", "StatefulSet", "Job"):
        yield f"{workload['kind']}/{workload['metadata']['name']}", pod_spec(workload)


def annotations(doc: dict[str, Any]) -> dict[str, str]:
    found: dict[str, str] = doc["metadata"].get("annotations") or {}
    return found


def keys_of(docs: Docs, overlay: str, kind: str, name: str) -> set[str] | None:
    """The keys of a ConfigMap or Secret, None when it does not exist."""
    if kind == "ConfigMap":
        found = by_name(docs, "ConfigMap").get(name)
        return None if found is None else set(found.get("data", {}))
    data = secret_data(docs, name, overlay)
    return None if data is None else set(data)


def missing_references(spec: dict[str, Any], docs: Docs, overlay: str) -> Iterator[str]:
    """The ConfigMaps, Secrets and keys a pod names that do not exist."""
    for container in spec["containers"] + spec.get("initContainers", []):
        for source in container.get("envFrom", []):
            kind = "ConfigMap" if "configMapRef" in source else "Secret"
            ref = source.get("configMapRef") or source["secretRef"]
            if keys_of(docs, overlay, kind, ref["name"]) is None and not ref.get("optional"):
                yield f"{kind} {ref['name']}"
        for item in container.get("env", []):
            for kind, ref_key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                ref = (item.get("valueFrom") or {}).get(ref_key)
                if ref and ref["key"] not in (keys_of(docs, overlay, kind, ref["name"]) or set()):
                    yield f"{kind} {ref['name']} key {ref['key']}"
    for volume in spec.get("volumes", []):
        for kind, field, name_field in (("ConfigMap", "configMap", "name"),
                                        ("Secret", "secret", "secretName")):  # fmt: skip
            if field not in volume:
                continue
            name = volume[field][name_field]
            present = keys_of(docs, overlay, kind, name)
            if present is None:
                yield f"{kind} {name} (volume)"
                continue
            for item in volume[field].get("items", []):
                if item["key"] not in present:
                    yield f"{kind} {name} key {item['key']}"


@cache
def applications() -> dict[str, Any]:
    return dict(apps())


@cache
def answer(pkg: str, path: str) -> int:
    """The status the app answers GET `path` with, its routing done by the app itself
    (no lifespan: a readiness route without its database may fail, but it is there)."""
    return asyncio.run(_get_status(applications()[pkg], path))


async def _get_status(app: Any, path: str) -> int:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        return (await client.get(path)).status_code


@pytest.mark.parametrize("overlay", OVERLAYS)
class TestWiring:
    def test_every_url_leads_to_a_service_the_policies_let_the_workload_reach(
        self, overlays: dict[str, Docs], overlay: str
    ) -> None:
        docs = overlays[overlay]
        policies, pods = of_kind(docs, "NetworkPolicy"), workload_pods(docs)
        checked = 0
        for workload in of_kind(docs, "Deployment", "Job"):
            source = pods[workload["spec"]["template"]["metadata"]["labels"][
                "app.kubernetes.io/name"]]  # fmt: skip
            for container in pod_spec(workload)["containers"]:
                values = settings(container, docs, overlay)
                if workload["kind"] == "Job":  # a migration opens its database only
                    values = {"DATABASE_URL": values["DATABASE_URL"]}
                for variable, url in urls(values):
                    destination, port = endpoint(docs, pods, url)
                    if destination is source:
                        continue
                    assert allowed(policies, source, destination, port), (
                        f"{workload['metadata']['name']}: {variable}={url} is blocked "
                        f"(port {port} to {destination.name})"
                    )
                    checked += 1
        assert checked > 2 * len(SPECS)

    def test_every_config_map_secret_key_and_account_named_exists(
        self, overlays: dict[str, Docs], overlay: str
    ) -> None:
        docs = overlays[overlay]
        accounts = by_name(docs, "ServiceAccount")
        missing = []
        for workload, spec in pod_specs(docs):
            if spec.get("serviceAccountName", "default") not in accounts:
                missing.append(f"{workload}: ServiceAccount {spec.get('serviceAccountName')}")
            missing += [f"{workload}: {gap}" for gap in missing_references(spec, docs, overlay)]
        assert not missing, missing

    def test_every_workload_runs_as_a_service_account_of_its_own(
        self, overlays: dict[str, Docs], overlay: str
    ) -> None:
        docs = overlays[overlay]
        accounts = by_name(docs, "ServiceAccount")
        used = [spec.get("serviceAccountName", "default") for _, spec in pod_specs(docs)]
        assert "default" not in used
        assert len(set(used)) == len(used), "a ServiceAccount per workload"
        for name in used:
            assert accounts[name].get("automountServiceAccountToken") is False, name

    def test_probes_ask_routes_the_app_serves(
        self, overlays: dict[str, Docs], overlay: str
    ) -> None:
        for workload in of_kind(overlays[overlay], "Deployment"):
            for container in pod_spec(workload)["containers"]:
                pkg = image_package(container["image"])
                assert pkg is not None
                ports = {p["name"] for p in container["ports"]}
                for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                    check = container[probe]["httpGet"]
                    status = answer(pkg, check["path"])
                    assert status not in (404, 405), f"{pkg} {probe}: {check} -> {status}"
                    assert check["port"] in ports, f"{pkg} {probe}: {check}"

    def test_argo_cd_applies_what_a_hook_reads_before_it_and_servers_after_migrations(
        self, overlays: dict[str, Docs], overlay: str
    ) -> None:
        """Argo CD's order: PreSync hooks, then the Sync phase wave by wave (within a
        wave ConfigMaps, Secrets and ServiceAccounts before Jobs), waiting for a wave to
        be healthy (a Job: complete) before the next; PostSync last."""
        docs = overlays[overlay]
        phases = {"PreSync": 0, "Sync": 1, "PostSync": 2}

        def when(doc: dict[str, Any]) -> tuple[int, int]:
            notes = annotations(doc)
            hook = notes.get("argocd.argoproj.io/hook", "Sync")
            return phases[hook], int(notes.get("argocd.argoproj.io/sync-wave", "0"))

        present = {(doc["kind"], doc["metadata"]["name"]): doc for doc in docs}
        for job in of_kind(docs, "Job"):
            spec = pod_spec(job)
            needed = [("ServiceAccount", spec.get("serviceAccountName", "default"))]
            for source in spec["containers"][0].get("envFrom", []):
                kind = "ConfigMap" if "configMapRef" in source else "Secret"
                needed.append((kind, (source.get("configMapRef") or source["secretRef"])["name"]))
            for kind, name in needed:
                if (kind, name) not in present:
                    assert overlay == "prod", f"{job['metadata']['name']} reads a missing {name}"
                    assert name in template_secrets(), name  # created before any sync
                    continue
                assert when(present[(kind, name)]) <= when(job), (
                    f"{job['metadata']['name']} runs before {kind} {name} exists"
                )
            server = by_name(docs, "Deployment")[
                job["metadata"]["name"].removesuffix("-migrate")]  # fmt: skip
            assert when(server) > when(job), f"{server['metadata']['name']} before its migration"

    def test_database_connections_fit_the_server(
        self, overlays: dict[str, Docs], overlay: str
    ) -> None:
        """(pool + overflow) x the most pods at once, over the services, plus one per
        migration, within the server's max_connections less the reserved ones."""
        docs = overlays[overlay]
        autoscalers = by_name(docs, "HorizontalPodAutoscaler")
        (pool,) = [c for c in of_kind(docs, "ConfigMap")
                   if c["metadata"]["name"].startswith("database-pool")]  # fmt: skip
        limit = int(annotations(pool)[MAX_CONNECTIONS])
        total = 0
        for pkg, spec in SPECS.items():
            if spec.migrations is None:
                continue
            values = settings(server_container(docs, pkg), docs, overlay)
            per_pod = int(values["DATABASE_POOL_SIZE"]) + int(values["DATABASE_MAX_OVERFLOW"])
            workload = by_name(docs, "Deployment")[kube_name(pkg)]
            most = autoscalers[kube_name(pkg)]["spec"]["maxReplicas"]
            surge = workload["spec"]["strategy"]["rollingUpdate"]["maxSurge"]
            extra = (
                math.ceil(most * int(surge.rstrip("%")) / 100)
                if str(surge).endswith("%")
                else int(surge)
            )
            total += per_pod * (most + extra) + 1
        assert total <= limit - RESERVED_CONNECTIONS, (
            f"{overlay}: up to {total} connections, the server takes {limit}"
        )


def nginx_security_headers() -> dict[str, str]:
    """The constant headers nginx.conf adds to every answer (not those whose value depends
    on the request, like the Content-Security-Policy)."""
    found = {}
    for line in (REPO / "nginx.conf").read_text().splitlines():
        match = re.match(r'\s*add_header\s+([\w-]+)\s+"([^"$]*)"\s+always;', line)
        if match:
            found[match.group(1)] = match.group(2)
    return found


def test_the_ingress_adds_the_headers_nginx_conf_sets(overlays: dict[str, Docs]) -> None:
    expected = nginx_security_headers()
    assert {"X-Content-Type-Options", "X-Frame-Options"} <= set(expected)
    for docs in overlays.values():
        (ingress,) = of_kind(docs, "Ingress")
        reference = annotations(ingress)["nginx.ingress.kubernetes.io/custom-headers"]
        namespace, _, name = reference.rpartition("/")
        assert namespace == NAMESPACE
        headers = by_name(docs, "ConfigMap")[name]
        assert headers["data"] == expected


def test_the_readme_dev_recipe_builds_every_image() -> None:
    readme = (REPO / "README.md").read_text()
    (loop,) = re.findall(r"for svc in ([^;]+); do", readme)
    built = dict(item.split(":") for item in loop.replace("\\\n", " ").split())
    assert {pkg: int(port) for pkg, port in built.items()} == {
        pkg: spec.port for pkg, spec in SPECS.items()
    }


def with_prometheus_operator(tmp_path: Path, overlay: str) -> Docs:
    """The overlay with the prometheus-operator component added, as a user would."""
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                # kustomize takes relative paths only.
                "resources": [
                    os.path.relpath(REPO / "kubernetes" / "overlays" / overlay, tmp_path)
                ],
                "components": [
                    os.path.relpath(
                        REPO / "kubernetes" / "components" / "prometheus-operator", tmp_path
                    )
                ],
            }
        )
    )
    return kustomize_directory(tmp_path)


def relabel(rule: dict[str, Any], labels: dict[str, str]) -> dict[str, str]:
    """One Prometheus relabel rule of the default `replace` action."""
    value = ";".join(labels.get(name, "") for name in rule["sourceLabels"])
    match = re.fullmatch(rule.get("regex", "(.*)"), value)
    if match is None:
        return labels
    replacement = re.sub(r"\$\{(\d+)\}|\$(\d+)", lambda m: match.group(int(m[1] or m[2])),
                         rule.get("replacement", "$1"))  # fmt: skip
    return {**labels, rule["targetLabel"]: replacement}


def alerted_jobs() -> set[str]:
    rules = (REPO / "deploy" / "observability" / "alerts.yml").read_text()
    return set(re.findall(r'up\{job="(\w+)"\}', rules))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_prometheus_operator_scrapes_every_server_under_the_alerts_job_names(
    overlays: dict[str, Docs], overlay: str, tmp_path: Path
) -> None:
    docs = with_prometheus_operator(tmp_path, overlay)
    (monitor,) = of_kind(docs, "PodMonitor")
    assert monitor["metadata"]["namespace"] == NAMESPACE
    (endpoint_,) = monitor["spec"]["podMetricsEndpoints"]
    jobs = set()
    for workload in of_kind(overlays[overlay], "Deployment"):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert selects(monitor["spec"]["selector"], labels), workload["metadata"]["name"]
        (container,) = pod_spec(workload)["containers"]
        assert endpoint_["port"] in {p["name"] for p in container["ports"]}
        meta = {"__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", k): v
                for k, v in labels.items()}  # fmt: skip
        for rule in endpoint_["relabelings"]:
            meta = relabel(rule, meta)
        jobs.add(meta["job"])
    assert jobs == set(SPECS) == alerted_jobs()
