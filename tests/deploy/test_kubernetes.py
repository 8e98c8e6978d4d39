"""The Kubernetes overlays as `kubectl kustomize` builds them: valid against the API
schemas (offline, kubernetes-validate), locked down, wired to each service's settings,
and walled off by NetworkPolicies exactly along the calls the services make."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from tests.deploy.manifests import (
    NOT_YET_DEPLOYED,
    OVERLAYS,
    PORTS,
    REPO,
    SPECS,
    WORKLOAD_KINDS,
    Pod,
    allowed,
    by_name,
    configured_url,
    container_environment,
    endpoint,
    image_package,
    image_tag,
    kube_name,
    of_kind,
    pod_spec,
    workload_pods,
)
from tests.test_service_shape import settings_variables

#: The oldest Kubernetes the manifests promise to work on, and the newest schema known.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.utils.latest_version())
SECRETS_TEMPLATE = REPO / "kubernetes" / "overlays" / "prod" / "secrets.example.yaml"
DATABASE_SERVICES = sorted(pkg for pkg, spec in SPECS.items() if spec.migrations)
#: Who calls whom, besides the gateway (which calls everyone) and user_service (which
#: everyone calls for the JWKS and account status).
CALLS = {
    ("order_service", "product_service"),
    ("order_service", "inventory_service"),
    ("inventory_service", "product_service"),
}

Docs = list[dict[str, Any]]


def external_secrets() -> dict[str, set[str]]:
    """The Secrets the prod overlay expects to exist, with their keys."""
    return {
        doc["metadata"]["name"]: set(doc.get("stringData", {})) | set(doc.get("data", {}))
        for doc in yaml.safe_load_all(SECRETS_TEMPLATE.read_text())
        if doc and doc["kind"] == "Secret"
    }


def deployment(docs: Docs, pkg: str) -> dict[str, Any]:
    return by_name(docs, "Deployment")[kube_name(pkg)]


@pytest.mark.parametrize("overlay", OVERLAYS)
class TestOverlay:
    def test_every_object_validates_against_the_kubernetes_schemas(
        self, overlays: dict[str, Docs], overlay: str
    ) -> None:
        failures = []
        for version in KUBERNETES_VERSIONS:
            for doc in overlays[overlay]:
                try:
                    kubernetes_validate.validate(doc, version, strict=True)
                except kubernetes_validate.ValidationError as error:
                    where = ".".join(str(p) for p in error.path)
                    failures.append(
                        f"{version} {doc['kind']}/{doc['metadata']['name']} {where}: "
                        f"{error.message}"
                    )
        assert not failures, "\n".join(failures)

    def test_everything_is_in_one_restricted_namespace(
        self, overlays: dict[str, Docs], overlay: str
    ) -> None:
        docs = overlays[overlay]
        (namespace,) = of_kind(docs, "Namespace")
        assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == (
            "restricted"
        )
        name = namespace["metadata"]["name"]
        for doc in docs:
            if doc["kind"] != "Namespace":
                assert doc["metadata"].get("namespace") == name, doc["metadata"]["name"]

    def test_every_pod_is_locked_down(self, overlays: dict[str, Docs], overlay: str) -> None:
        for workload in of_kind(overlays[overlay], *WORKLOAD_KINDS):
            name = workload["metadata"]["name"]
            spec = pod_spec(workload)
            assert spec["securityContext"]["runAsNonRoot"] is True, name
            assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
            assert spec.get("automountServiceAccountToken") is False, name
            assert spec.get("enableServiceLinks") is False, name
            mounts_of_tmp = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
            for container in spec["containers"]:
                context = container["securityContext"]
                assert context["allowPrivilegeEscalation"] is False, name
                assert context["capabilities"]["drop"] == ["ALL"], name
                assert image_tag(container["image"]) not in (None, "latest"), name
                assert {"requests", "limits"} <= set(container["resources"]), name
                for bound in ("requests", "limits"):
                    assert {"cpu", "memory"} <= set(container["resources"][bound]), name
                if image_package(container["image"]) is None:
                    continue  # dev's PostgreSQL and RabbitMQ
                assert spec["securityContext"]["runAsUser"] == 10001, name
                assert context["readOnlyRootFilesystem"] is True, name
                assert any(
                    mount["mountPath"] == "/tmp"  # noqa: S108 - the pod's own emptyDir
                    and mount["name"] in mounts_of_tmp
                    for mount in container["volumeMounts"]
                ), f"{name}: /tmp must be an emptyDir under a read-only root"

    def test_every_service_is_deployed_probed_exposed_and_autoscaled(
        self, overlays: dict[str, Docs], overlay: str
    ) -> None:
        docs = overlays[overlay]
        services = by_name(docs, "Service")
        autoscalers = by_name(docs, "HorizontalPodAutoscaler")
        budgets = by_name(docs, "PodDisruptionBudget")
        assert {image_package(c["image"]) for d in of_kind(docs, "Deployment")
                for c in pod_spec(d)["containers"]} == set(SPECS)  # fmt: skip
        for pkg in SPECS:
            name = kube_name(pkg)
            workload = deployment(docs, pkg)
            labels = workload["spec"]["template"]["metadata"]["labels"]
            (container,) = pod_spec(workload)["containers"]
            assert image_package(container["image"]) == pkg
            assert container["ports"] == [{"name": "http", "containerPort": PORTS[pkg]}]
            assert container["readinessProbe"]["httpGet"] == {
                "path": "/health/ready",
                "port": "http",
            }
            assert container["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}
            assert "command" not in container, "the image's CMD runs"
            assert "args" not in container, "the image's CMD runs"
            assert "replicas" not in workload["spec"], "the autoscaler owns the replica count"

            service = services[name]
            assert service["spec"]["ports"] == [
                {"name": "http", "port": PORTS[pkg], "targetPort": "http"}
            ]
            assert service["spec"]["selector"].items() <= labels.items()

            autoscaler = autoscalers[name]
            assert autoscaler["apiVersion"] == "autoscaling/v2"
            assert autoscaler["spec"]["scaleTargetRef"] == {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": name,
            }
            assert 1 <= autoscaler["spec"]["minReplicas"] <= autoscaler["spec"]["maxReplicas"]
            if overlay == "prod":
                assert autoscaler["spec"]["minReplicas"] >= 3
            budget = budgets[name]
            assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()

    def test_every_database_service_has_a_migration_job(
        self, overlays: dict[str, Docs], overlay: str
    ) -> None:
        docs = overlays[overlay]
        jobs = by_name(docs, "Job")
        assert set(jobs) == {f"{kube_name(pkg)}-migrate" for pkg in DATABASE_SERVICES}
        for pkg in DATABASE_SERVICES:
            job = jobs[f"{kube_name(pkg)}-migrate"]
            (migrate,) = pod_spec(job)["containers"]
            (server,) = pod_spec(deployment(docs, pkg))["containers"]
            # `migrate` retries while the database is not accepting connections yet.
            assert migrate["command"] == ["migrate", SPECS[pkg].migrations]
            assert migrate["image"] == server["image"]
            assert migrate["envFrom"] == server["envFrom"], "the same settings as the service"
            assert pod_spec(job)["restartPolicy"] == "Never"
            assert job["metadata"]["annotations"]["argocd.argoproj.io/hook"] == "Sync"

    def test_containers_get_only_variables_their_settings_read(
        self, overlays: dict[str, Docs], overlay: str
    ) -> None:
        docs = overlays[overlay]
        external = external_secrets() if overlay == "prod" else {}
        checked = set()
        for workload in of_kind(docs, "Deployment", "Job"):
            for container in pod_spec(workload)["containers"]:
                pkg = image_package(container["image"])
                assert pkg is not None
                environment = container_environment(container, docs, external)
                unknown = {
                    f"{name} (from {origin})"
                    for name, origin in environment.items()
                    if name.upper() not in settings_variables(pkg)
                }
                assert not unknown, f"{workload['metadata']['name']}: {sorted(unknown)}"
                if pkg in DATABASE_SERVICES:
                    assert {"DATABASE_URL", "RABBITMQ_URL"} <= set(environment)
                checked.add(pkg)
        assert checked == set(SPECS)
        (common,) = [c for c in of_kind(docs, "ConfigMap") if "ecommerce-common" in
                     c["metadata"]["name"]]  # fmt: skip
        expected = "development" if overlay == "dev" else "production"
        assert common["data"]["ENVIRONMENT"] == expected

    def test_service_urls_name_services_on_their_ports(
        self, overlays: dict[str, Docs], overlay: str
    ) -> None:
        docs = overlays[overlay]
        services = by_name(docs, "Service")
        for config_map in of_kind(docs, "ConfigMap"):
            for variable, value in config_map.get("data", {}).items():
                if not variable.endswith("_SERVICE_URL"):
                    continue
                target = variable.removesuffix("_URL").lower()
                if target in NOT_YET_DEPLOYED:
                    continue
                url = urlsplit(value)
                assert url.hostname == kube_name(target), f"{variable}={value}"
                assert url.port == PORTS[target], f"{variable}={value}"
                assert services[kube_name(target)]["spec"]["ports"][0]["port"] == url.port

    def test_the_ingress_leads_to_the_gateway(
        self, overlays: dict[str, Docs], overlay: str
    ) -> None:
        docs = overlays[overlay]
        (ingress,) = of_kind(docs, "Ingress")
        (rule,) = ingress["spec"]["rules"]
        (path,) = rule["http"]["paths"]
        assert path["path"] == "/"
        assert path["backend"]["service"]["name"] == kube_name("api_gateway")
        assert "api-gateway" in by_name(docs, "Service")
        assert ingress["metadata"]["annotations"][
            "nginx.ingress.kubernetes.io/proxy-body-size"
        ] == ("1m")
        if overlay == "prod":
            assert ingress["spec"]["tls"][0]["hosts"] == [rule["host"]]

    def test_the_migration_phase_applies_what_the_jobs_need_and_no_server(
        self, overlays: dict[str, Docs], overlay: str
    ) -> None:
        """README's order: `kubectl apply -k ... -l 'app.kubernetes.io/component!=server'`,
        wait for the Jobs, then apply everything."""
        docs = overlays[overlay]
        first = [
            doc
            for doc in docs
            if (doc["metadata"].get("labels") or {}).get("app.kubernetes.io/component") != "server"
        ]
        kinds = {doc["kind"] for doc in first}
        assert "Job" in kinds
        assert not kinds & {
            "Deployment",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            "Ingress",
        }
        names = {(doc["kind"], doc["metadata"]["name"]) for doc in first}
        assert not {("Service", kube_name(pkg)) for pkg in SPECS} & names
        assert ("Namespace", "ecommerce") in names
        for job in of_kind(docs, "Job"):
            for source in pod_spec(job)["containers"][0]["envFrom"]:
                if "configMapRef" in source:
                    assert ("ConfigMap", source["configMapRef"]["name"]) in names
                elif overlay == "dev":
                    assert ("Secret", source["secretRef"]["name"]) in names
        if overlay == "dev":
            assert {("StatefulSet", "postgres"), ("Service", "postgres")} <= names


# --- NetworkPolicies -----------------------------------------------------------------------


INGRESS_CONTROLLER = Pod(
    "ingress-nginx", "ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"}
)
KUBE_DNS = Pod("kube-dns", "kube-system", {"k8s-app": "kube-dns"})
PROMETHEUS = Pod("prometheus", "monitoring", {"app.kubernetes.io/name": "prometheus"})
#: A pod someone started in the namespace (`kubectl run`), and one in another namespace.
INTRUDERS = (
    Pod("debug", "ecommerce", {"run": "debug"}),
    Pod("elsewhere", "default", {"app": "elsewhere"}),
)
#: Anything outside the cluster: a managed database, broker or Redis, the internet.
OUTSIDE = Pod("outside", None, {})


def expected_calls(servers: dict[str, Pod]) -> set[tuple[str, str]]:
    gateway, user = kube_name("api_gateway"), kube_name("user_service")
    calls = {(gateway, name) for name in servers} | {(name, user) for name in servers}
    calls |= {(kube_name(a), kube_name(b)) for a, b in CALLS}
    return {(a, b) for a, b in calls if a != b}


@pytest.mark.parametrize("overlay", OVERLAYS)
class TestNetworkPolicies:
    def pods(self, docs: Docs) -> tuple[list[dict[str, Any]], dict[str, Pod]]:
        return of_kind(docs, "NetworkPolicy"), workload_pods(docs)

    def test_services_reach_exactly_the_services_they_call(
        self, overlays: dict[str, Docs], overlay: str
    ) -> None:
        policies, pods = self.pods(overlays[overlay])
        servers = {
            n: p for n, p in pods.items() if p.labels["app.kubernetes.io/component"] == "server"
        }
        assert set(servers) == {kube_name(pkg) for pkg in SPECS}
        expected = expected_calls(servers)
        wrong = []
        for source in servers.values():
            for target in servers.values():
                if source is target:
                    continue
                port = PORTS[target.name.replace("-", "_")]
                if allowed(policies, source, target, port) != (
                    (source.name, target.name) in expected
                ):
                    wrong.append(f"{source.name} -> {target.name}:{port}")
        assert not wrong, f"allowed where it should not be, or the reverse: {wrong}"

    def test_only_the_ingress_controller_reaches_the_gateway_from_outside(
        self, overlays: dict[str, Docs], overlay: str
    ) -> None:
        policies, pods = self.pods(overlays[overlay])
        for name, pod in pods.items():
            for port in [*pod.ports.values(), 8000]:
                expected = name == "api-gateway" and port == 8000
                assert allowed(policies, INGRESS_CONTROLLER, pod, port) is expected, name
                for intruder in INTRUDERS:
                    assert not allowed(policies, intruder, pod, port), f"{intruder.name} -> {name}"

    def test_every_pod_resolves_names_and_nothing_leaves_for_the_internet(
        self, overlays: dict[str, Docs], overlay: str
    ) -> None:
        policies, pods = self.pods(overlays[overlay])
        for name, pod in pods.items():
            assert allowed(policies, pod, KUBE_DNS, 53), name
            for port in (80, 443, 22):
                assert not allowed(policies, pod, OUTSIDE, port), f"{name} -> outside:{port}"

    def test_prometheus_scrapes_every_server(self, overlays: dict[str, Docs], overlay: str) -> None:
        policies, pods = self.pods(overlays[overlay])
        for pkg in SPECS:
            assert allowed(policies, PROMETHEUS, pods[kube_name(pkg)], PORTS[pkg]), pkg

    def test_stores_are_reached_by_the_services_that_own_data_only(
        self, overlays: dict[str, Docs], overlay: str
    ) -> None:
        docs = overlays[overlay]
        policies, pods = self.pods(docs)
        gateway = pods[kube_name("api_gateway")]
        # Where the configured URLs lead (the dev overlay's Secrets, prod's template).
        stores = {
            store: endpoint(docs, pods, configured_url(docs, overlay, "order_service", variable))
            for store, variable in (("postgres", "DATABASE_URL"), ("rabbitmq", "RABBITMQ_URL"))
        }
        for pkg in DATABASE_SERVICES:
            server, migration = pods[kube_name(pkg)], pods[f"{kube_name(pkg)}-migrate"]
            for store, port in stores.values():
                assert allowed(policies, server, store, port), f"{pkg} -> {store.name}:{port}"
            postgres, port = stores["postgres"]
            assert allowed(policies, migration, postgres, port), f"{migration.name} -> postgres"
            rabbitmq, port = stores["rabbitmq"]
            assert not allowed(policies, migration, rabbitmq, port), migration.name
        for store, port in stores.values():
            assert not allowed(policies, gateway, store, port), f"gateway -> {store.name}"
        redis = configured_url(docs, overlay, "api_gateway", "REDIS_URL")
        if redis:
            store, port = endpoint(docs, pods, redis)
            assert allowed(policies, gateway, store, port), f"the gateway's Redis ({redis})"
        if overlay == "dev":
            for store, _ in stores.values():
                for pkg in SPECS:
                    target = pods[kube_name(pkg)]
                    assert not allowed(policies, store, target, PORTS[pkg]), store.name


# --- the stores of the dev overlay, and the prod overlay's Secrets ---------------------------


def test_dev_postgres_creates_a_database_per_service(overlays: dict[str, Docs]) -> None:
    docs = overlays["dev"]
    postgres = by_name(docs, "StatefulSet")["postgres"]
    (container,) = pod_spec(postgres)["containers"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert set(str(env["SERVICE_DATABASES"]).split()) == set(DATABASE_SERVICES)
    secrets = {s["metadata"]["name"]: s for s in of_kind(docs, "Secret")}
    for pkg in DATABASE_SERVICES:
        (secret,) = [s for n, s in secrets.items() if n.startswith(f"{kube_name(pkg)}-secrets")]
        url = urlsplit(base64.b64decode(secret["data"]["DATABASE_URL"]).decode())
        assert (url.hostname, url.port, url.path, url.username) == (
            "postgres",
            5432,
            f"/{pkg}",
            pkg,
        )
    (init,) = [
        c for c in of_kind(docs, "ConfigMap") if c["metadata"]["name"].startswith("postgres-init")
    ]
    assert (
        init["data"]["init-databases.sh"]
        == (REPO / "deploy" / "postgres" / "init-databases.sh").read_text()
    ), "kubernetes/overlays/dev/init-databases.sh must equal deploy/postgres/'s"


def test_prod_creates_no_secret_and_documents_every_one_it_uses(overlays: dict[str, Docs]) -> None:
    docs = overlays["prod"]
    assert not of_kind(docs, "Secret"), "prod Secrets are created outside the repository"
    referenced = {
        source["secretRef"]["name"]
        for workload in of_kind(docs, *WORKLOAD_KINDS)
        for container in pod_spec(workload)["containers"]
        for source in container.get("envFrom", [])
        if "secretRef" in source
    }
    assert referenced == set(external_secrets()), "secrets.example.yaml lists what prod uses"


def test_secret_template_is_not_part_of_any_kustomization() -> None:
    for path in (REPO / "kubernetes").rglob("kustomization.yaml"):
        kustomization = yaml.safe_load(path.read_text())
        listed = [*kustomization.get("resources", []), *kustomization.get("components", [])]
        assert not [entry for entry in listed if "secret" in entry.lower()], path
