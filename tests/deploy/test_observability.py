"""deploy/observability: Prometheus' scrape config and alert rules (checked by promtool,
and each alert run against series that must fire it and series that must not), the
Grafana dashboard and its provisioning, the OpenTelemetry Collector, and how
docker-compose.yml and the Kubernetes base wire them. Every metric they name must be
one the services export, with the labels they give it, so a rename on either side fails
here."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from prometheus_client import REGISTRY

from tests.deploy.manifests import (
    PORTS,
    REPO,
    SPECS,
    Pod,
    allowed,
    compose_package,
    kube_name,
    of_kind,
    workload_pods,
)

OBSERVABILITY = REPO / "deploy" / "observability"
PROMETHEUS_CONFIG = OBSERVABILITY / "prometheus.yml"
ALERTS = OBSERVABILITY / "alerts.yml"
COLLECTOR_CONFIG = OBSERVABILITY / "otel-collector.yml"
GRAFANA = OBSERVABILITY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "ecommerce.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "datasources.yml"
DASHBOARD_PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "dashboards.yml"

#: The metrics the services export (prometheus_client names: a counter gets `_total`
#: when exposed, a histogram `_bucket`, `_sum` and `_count`), with their labels.
METRICS: dict[str, tuple[str, frozenset[str]]] = {
    "http_requests": ("counter", frozenset({"method", "route", "status"})),
    "http_request_duration_seconds": ("histogram", frozenset({"method", "route"})),
    "http_requests_in_flight": ("gauge", frozenset()),
    "upstream_requests": ("counter", frozenset({"upstream", "outcome"})),
    "upstream_request_duration_seconds": ("histogram", frozenset({"upstream"})),
    "circuit_breaker_state": ("gauge", frozenset({"upstream"})),
    "outbox_backlog": ("gauge", frozenset({"service"})),
    "outbox_oldest_pending_age_seconds": ("gauge", frozenset({"service"})),
    "events_published": ("counter", frozenset({"type"})),
    "event_publish_failures": ("counter", frozenset({"reason"})),
    "events_consumed": ("counter", frozenset({"type", "outcome"})),
    "events_dead_lettered": ("counter", frozenset({"reason"})),
    "event_handling_duration_seconds": ("histogram", frozenset({"type"})),
    "events_queue_depth": ("gauge", frozenset({"service"})),
    "events_dead_letter_depth": ("gauge", frozenset({"service"})),
    "inventory_reservations": ("counter", frozenset({"outcome", "reason"})),
    "orders": ("counter", frozenset({"status", "cancel_reason"})),
    "checkout_step_duration_seconds": ("histogram", frozenset({"step", "outcome"})),
    "webhook_delivery_attempts": ("counter", frozenset({"outcome"})),
    "webhook_deliveries": ("counter", frozenset({"status"})),
    "webhook_delivery_attempt_duration_seconds": ("histogram", frozenset()),
    "webhook_delivery_latency_seconds": ("histogram", frozenset()),
    "webhook_deliveries_pending": ("gauge", frozenset()),
    "webhook_oldest_pending_delivery_age_seconds": ("gauge", frozenset()),
}
#: What Prometheus adds to every series it scrapes (job = the service, see prometheus.yml).
TARGET_LABELS = frozenset({"job", "instance"})
#: The series Prometheus makes itself for each target: 1 when the scrape worked.
SCRAPE_SERIES = {"up": frozenset[str]()}
SEVERITIES = {"critical", "warning"}


def exposed_series() -> dict[str, frozenset[str]]:
    """Every series name a query may use, with the labels it carries."""
    series = {name: labels | TARGET_LABELS for name, labels in SCRAPE_SERIES.items()}
    for name, (kind, labels) in METRICS.items():
        labels |= TARGET_LABELS
        if kind == "counter":
            series[f"{name}_total"] = labels
        elif kind == "gauge":
            series[name] = labels
        else:
            series[f"{name}_bucket"] = labels | {"le"}
            series[f"{name}_sum"] = labels
            series[f"{name}_count"] = labels
    return series


SERIES = exposed_series()


# --- reading PromQL -------------------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_SELECTOR = re.compile(r"\{([^{}]*)\}")
_MATCHER = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)\s*\"\"")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
_RANGE = re.compile(r"\[[^\]]*\]")
_IDENTIFIER = re.compile(r"(?<![\w:.])([a-zA-Z_:][\w:]*)(\s*\()?")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
_ABSENT = re.compile(r"\babsent\s*\(\s*[a-zA-Z_:][\w:]*\s*\{([^{}]*)\}")


class Query:
    """The metric and label names a PromQL expression uses (a tokenizer, not a parser:
    enough for the expressions of this folder, which promtool parses for real)."""

    def __init__(self, expr: str) -> None:
        self.expr = expr
        text = _STRING.sub('""', expr)
        self.matched_labels = {
            m for body in _SELECTOR.findall(text) for m in _MATCHER.findall(body)
        }
        self.grouping_labels = {
            label.strip()
            for clause in _GROUPING.findall(text)
            for label in clause.split(",")
            if label.strip()
        }
        self.absent_labels = {
            m for body in _ABSENT.findall(text) for m in _MATCHER.findall(body)
        }  # absent(x{job="a"}) returns {job="a"}
        text = _GROUPING.sub(" ", _RANGE.sub(" ", _SELECTOR.sub(" ", text)))
        self.metrics = {
            name
            for name, call in _IDENTIFIER.findall(text)
            if not call and name.lower() not in _KEYWORDS
        }

    @property
    def labels(self) -> set[str]:
        return self.matched_labels | self.grouping_labels

    def unknown_metrics(self) -> set[str]:
        return self.metrics - set(SERIES)

    def unknown_labels(self) -> set[str]:
        """Labels none of the expression's metrics carries."""
        carried = set().union(*(SERIES.get(name, frozenset()) for name in self.metrics))
        return self.labels - carried

    def result_labels(self) -> set[str]:
        """Labels an alert of this expression can carry: what it aggregates by, and what
        absent() fills in."""
        return self.grouping_labels | self.absent_labels


def test_the_query_reader_finds_metrics_and_labels() -> None:
    query = Query(
        "histogram_quantile(0.99, sum by (job, le) (rate(http_request_duration_seconds_bucket"
        '{route!~"/health.*|up"}[5m] offset 1m))) > 1e3 and on (job) up == bool 1'
    )
    assert query.metrics == {"http_request_duration_seconds_bucket", "up"}
    assert query.labels == {"job", "le", "route"}
    assert not query.unknown_metrics()
    assert not query.unknown_labels()
    renamed = Query('sum by (service) (rate(http_request_total{status=~"5.."}[5m]))')
    assert renamed.unknown_metrics() == {"http_request_total"}
    assert renamed.unknown_labels() == {"service", "status"}
    assert Query('absent(up{job="user_service"})').result_labels() == {"job"}


def test_the_listed_metrics_are_the_ones_the_services_register() -> None:
    """Importing every service registers its metrics in the process' registry; the list
    above must match them, type and labels included."""
    for pkg in SPECS:
        importlib.import_module(f"{pkg}.main")
    # prometheus_client lists a metric's label names only on its (private) collector
    # objects: a metric with labels has no sample to read them from until it is used.
    registered = {
        collector._name: collector
        for collector in REGISTRY._names_to_collectors.values()
        if hasattr(collector, "_labelnames")
    }
    for name, (kind, labels) in METRICS.items():
        assert name in registered, f"no service registers {name}"
        collector = registered[name]
        assert collector._type == kind, name
        assert set(collector._labelnames) == labels, name


# --- prometheus.yml ---------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def scrape_targets(job: dict[str, Any]) -> set[tuple[str, int]]:
    """(host, port) of a job's static targets and DNS-discovered names."""
    targets = set()
    for static in job.get("static_configs", []):
        for target in static["targets"]:
            host, _, port = target.rpartition(":")
            targets.add((host, int(port)))
    for dns in job.get("dns_sd_configs", []):
        assert dns.get("type", "SRV") == "A", "A records: one target per container"
        targets |= {(name, int(dns["port"])) for name in dns["names"]}
    return targets


class TestPrometheusConfig:
    def test_every_service_is_its_own_job_scraped_on_its_port(self) -> None:
        config = load_yaml(PROMETHEUS_CONFIG)
        jobs = {job["job_name"]: job for job in config["scrape_configs"]}
        assert set(SPECS) <= set(jobs)
        for pkg in SPECS:
            job = jobs[pkg]
            assert scrape_targets(job) == {(pkg, PORTS[pkg])}, pkg
            assert job.get("metrics_path", "/metrics") == "/metrics", pkg
            assert job.get("scheme", "http") == "http", pkg
            # Nothing may replace the job label (a scraped `job` label included).
            assert not job.get("honor_labels", False), pkg
            for relabel in [
                *job.get("relabel_configs", []),
                *job.get("metric_relabel_configs", []),
            ]:
                assert relabel.get("target_label") != "job", pkg

    def test_loads_the_alert_rules(self) -> None:
        config = load_yaml(PROMETHEUS_CONFIG)
        assert [PROMETHEUS_CONFIG.parent / rule for rule in config["rule_files"]] == [ALERTS]

    def test_scrapes_often_enough_for_the_alert_windows(self) -> None:
        config = load_yaml(PROMETHEUS_CONFIG)
        # rate(...[5m]) and max_over_time(...[1m]) need several samples in the window.
        assert seconds(config["global"]["scrape_interval"]) <= 20
        assert seconds(config["global"]["evaluation_interval"]) <= 30


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    parts = re.fullmatch(r"((\d+)(ms|s|m|h|d))+", duration)
    assert parts, f"not a Prometheus duration: {duration}"
    return sum(int(n) * units[u] for n, u in re.findall(r"(\d+)(ms|s|m|h|d)", duration))


# --- alerts.yml -------------------------------------------------------------------------------


def alert_rules() -> list[dict[str, Any]]:
    groups = load_yaml(ALERTS)["groups"]
    return [rule for group in groups for rule in group["rules"]]


class TestAlertRules:
    def test_every_group_and_rule_is_well_formed(self) -> None:
        groups = load_yaml(ALERTS)["groups"]
        assert groups
        names = [group["name"] for group in groups]
        assert len(names) == len(set(names))
        rules = alert_rules()
        alerts = [rule["alert"] for rule in rules]
        assert len(alerts) == len(set(alerts)), "alert names are unique"
        for rule in rules:
            name = rule.get("alert")
            assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", str(name)), rule
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, name
            assert str(rule["expr"]).strip(), name
            assert seconds(str(rule["for"])) > 0, f"{name} fires on one evaluation"
            assert rule["labels"]["severity"] in SEVERITIES, name
            for annotation in ("summary", "description"):
                assert str(rule["annotations"].get(annotation, "")).strip(), (name, annotation)

    def test_the_alerts_the_operators_rely_on_exist(self) -> None:
        uses = {rule["alert"]: Query(rule["expr"]).metrics for rule in alert_rules()}
        expected = {
            "HighErrorRate": "http_requests_total",
            "HighLatencyP99": "http_request_duration_seconds_bucket",
            "CircuitBreakerOpen": "circuit_breaker_state",
            "OutboxBacklogGrowing": "outbox_backlog",
            "OutboxEventTooOld": "outbox_oldest_pending_age_seconds",
            "DeadLettersPresent": "events_dead_letter_depth",
            "EventsDeadLettered": "events_dead_lettered_total",
            "EventsUnroutable": "event_publish_failures_total",
            "ConsumerLagHigh": "events_queue_depth",
            "ServiceDown": "up",
        }
        for alert, metric in expected.items():
            assert metric in uses.get(alert, set()), alert

    def test_expressions_use_only_exported_metrics_and_their_labels(self) -> None:
        for rule in alert_rules():
            query = Query(rule["expr"])
            assert query.metrics, rule["alert"]
            assert not query.unknown_metrics(), (rule["alert"], query.unknown_metrics())
            assert not query.unknown_labels(), (rule["alert"], query.unknown_labels())

    def test_annotations_name_only_labels_the_alert_has(self) -> None:
        for rule in alert_rules():
            available = Query(rule["expr"]).result_labels() | set(rule["labels"])
            text = " ".join(str(value) for value in rule["annotations"].values())
            used = set(re.findall(r"\$labels\.(\w+)", text))
            assert used <= available, (rule["alert"], used - available)

    def test_service_down_knows_every_service(self) -> None:
        """A service with no target left (its containers gone) yields no `up` series at
        all: only absent() catches it, one per job."""
        (rule,) = [rule for rule in alert_rules() if rule["alert"] == "ServiceDown"]
        absent = set(re.findall(r'absent\(\s*up\{job="(\w+)"\}\s*\)', rule["expr"]))
        assert absent == set(SPECS)


# --- the alerts, run by promtool --------------------------------------------------------------


def promtool() -> str:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip(
            "promtool is not installed: scripts/ensure-deploy-tools.sh installs Debian's "
            "prometheus package (make test runs it)"
        )
    return binary


def run_promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_promtool_accepts_the_config_and_the_rules() -> None:
    result = run_promtool("check", "config", PROMETHEUS_CONFIG.name, cwd=OBSERVABILITY)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(alert_rules())} rules found" in result.stdout
    result = run_promtool("check", "rules", ALERTS.name, cwd=OBSERVABILITY)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    """The check above can fail."""
    rules = load_yaml(ALERTS)
    rules["groups"][0]["rules"][0]["expr"] = "sum by (job) (rate(http_requests_total[5m])"
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules))
    assert run_promtool("check", "rules", "alerts.yml", cwd=tmp_path).returncode != 0


def series(name: str, values: str, **labels: str) -> dict[str, str]:
    body = ", ".join(f'{key}="{value}"' for key, value in labels.items())
    return {"series": f"{name}{{{body}}}", "values": values}


def target(job: str) -> dict[str, str]:
    return {"job": job, "instance": f"{job}:{PORTS[job]}"}


def requests(job: str, status: str, per_minute: int, minutes: int = 40) -> dict[str, str]:
    labels = {**target(job), "method": "GET", "route": "/v1/products", "status": status}
    return series("http_requests_total", f"0+{per_minute}x{minutes}", **labels)


def latency(
    job: str, per_minute: dict[str, int], route: str = "/v1/products"
) -> list[dict[str, str]]:
    """Cumulative histogram buckets growing by `per_minute[le]` requests a minute."""
    labels = {**target(job), "method": "GET", "route": route}
    return [
        series("http_request_duration_seconds_bucket", f"0+{n}x40", **labels, le=le)
        for le, n in per_minute.items()
    ]


def healthy_system() -> list[dict[str, str]]:
    """Every service up, 1% errors, quick answers, breakers closed, events flowing."""
    found = [series("up", "1x40", **target(job)) for job in SPECS]
    for job in SPECS:
        found += [requests(job, "200", 600), requests(job, "500", 6)]
        found += latency(job, {"0.1": 594, "0.25": 600, "1.0": 600, "+Inf": 600})
    found.append(
        series("circuit_breaker_state", "0x40", **target("api_gateway"), upstream="user_service")
    )
    for job in ("user_service", "product_service", "order_service"):
        found.append(series("outbox_backlog", "3 5 2 0 4 1 0 2 5 3x31", **target(job), service=job))
        found.append(
            series("outbox_oldest_pending_age_seconds", "0 1 0 2x37", **target(job), service=job)
        )
    for job in ("inventory_service", "notification_service"):
        found += [
            series("events_queue_depth", "20 40 10x38", **target(job), service=job),
            series("events_dead_letter_depth", "0x40", **target(job), service=job),
            series("events_dead_lettered_total", "0x40", **target(job), reason="failed"),
        ]
    notifications = target("notification_service")
    found += [
        series("webhook_delivery_attempts_total", "0+60x40", **notifications, outcome="succeeded"),
        series("webhook_delivery_attempts_total", "0+20x40", **notifications, outcome="retry"),
        series("webhook_oldest_pending_delivery_age_seconds", "0 30 0 90x37", **notifications),
    ]
    return found


def expect(alert: str, at: str, *labels: dict[str, str]) -> dict[str, Any]:
    (rule,) = [rule for rule in alert_rules() if rule["alert"] == alert]
    return {
        "eval_time": at,
        "alertname": alert,
        "exp_alerts": [{"exp_labels": {**rule["labels"], **found}} for found in labels],
    }


def scenarios() -> list[dict[str, Any]]:
    """promtool unit tests: each group its own made-up series, and which alerts must be
    firing (with which labels) at which time. `exp_alerts: []` means none."""
    quiet = [expect(rule["alert"], at) for rule in alert_rules() for at in ("12m", "30m")]
    notifications = target("notification_service")
    return [
        {"name": "a healthy system raises nothing", "input_series": healthy_system(),
         "alert_rule_test": quiet},
        {
            "name": "a service that stops answering, and one whose containers are gone",
            "input_series": [
                *(series("up", "1x20", **target(job)) for job in SPECS
                  if job not in ("user_service", "notification_service")),
                series("up", "1 1 0x18", **target("user_service")),
            ],
            "alert_rule_test": [
                expect("ServiceDown", "1m"),
                expect("ServiceDown", "6m", {"job": "user_service"},
                       {"job": "notification_service"}),
            ],
        },
        {
            "name": "a third of the gateway's answers are 503s; a quiet service's one 500",
            "input_series": [
                requests("api_gateway", "200", 120), requests("api_gateway", "503", 60),
                requests("product_service", "200", 2), requests("product_service", "500", 1),
            ],
            "alert_rule_test": [
                expect("HighErrorRate", "4m"),
                expect("HighErrorRate", "12m", {"job": "api_gateway"}),
            ],
        },
        {
            "name": "order_service's p99 is between 1 and 2.5 s; fast health checks do not hide it",
            "input_series": [
                *latency("order_service", {"0.25": 900, "1.0": 970, "2.5": 1000, "+Inf": 1000}),
                *latency("order_service", {"0.25": 5000, "1.0": 5000, "2.5": 5000,
                                           "+Inf": 5000}, route="/health/ready"),
                *latency("user_service", {"0.25": 995, "1.0": 1000, "2.5": 1000, "+Inf": 1000}),
            ],
            "alert_rule_test": [
                expect("HighLatencyP99", "8m"),
                expect("HighLatencyP99", "16m", {"job": "order_service"}),
            ],
        },
        {
            "name": "a breaker that keeps opening between probes, and one that opened once",
            "interval": "15s",
            "input_series": [
                series("circuit_breaker_state", " ".join(["2 2 1"] * 20), **target("order_service"),
                       upstream="inventory_service"),
                series("circuit_breaker_state", "0x8 2 0x50", **target("order_service"),
                       upstream="product_service"),
            ],
            "alert_rule_test": [
                expect("CircuitBreakerOpen", "1m"),
                *(expect("CircuitBreakerOpen", at,
                         {"job": "order_service", "upstream": "inventory_service"})
                  for at in ("3m", "5m")),
            ],
        },
        {
            "name": "an outbox that keeps growing, and a large one that is draining",
            "input_series": [
                series("outbox_backlog", "0+20x40", **target("order_service"),
                       service="order_service"),
                series("outbox_backlog", "900-10x40", **target("product_service"),
                       service="product_service"),
                series("outbox_oldest_pending_age_seconds", "0+60x40",
                       **target("order_service"), service="order_service"),
                series("outbox_oldest_pending_age_seconds", "30x40",
                       **target("product_service"), service="product_service"),
            ],
            "alert_rule_test": [
                expect("OutboxBacklogGrowing", "12m"),
                expect("OutboxBacklogGrowing", "25m", {"service": "order_service"}),
                expect("OutboxEventTooOld", "8m"),
                expect("OutboxEventTooOld", "12m", {"service": "order_service"}),
            ],
        },
        {
            "name": "a handler that failed every try; its dead letters stay until replayed",
            "input_series": [
                series("events_dead_lettered_total", "0x5 1x40", **target("inventory_service"),
                       reason="failed"),
                series("events_dead_letter_depth", "0x5 1x40", **target("inventory_service"),
                       service="inventory_service"),
            ],
            "alert_rule_test": [
                expect("EventsDeadLettered", "5m"),
                expect("EventsDeadLettered", "8m", {"job": "inventory_service",
                                                    "reason": "failed"}),
                expect("EventsDeadLettered", "30m"),
                expect("DeadLettersPresent", "8m"),
                expect("DeadLettersPresent", "30m", {"service": "inventory_service"}),
            ],
        },
        {
            "name": "an endpoint that stopped answering; a receiver that refused a few",
            "input_series": [
                series("webhook_delivery_attempts_total", "0+30x60", **notifications,
                       outcome="retry"),
                series("webhook_delivery_attempts_total", "0+10x60", **notifications,
                       outcome="succeeded"),
                series("webhook_oldest_pending_delivery_age_seconds", "0+60x100",
                       **notifications),
            ],
            "alert_rule_test": [
                expect("WebhookDeliveriesFailing", "10m"),
                expect("WebhookDeliveriesFailing", "40m", {"job": "notification_service"}),
                expect("WebhookBacklogTooOld", "70m"),
                expect("WebhookBacklogTooOld", "90m", {"job": "notification_service"}),
            ],
        },
        {
            "name": "events returned unroutable; a broker that was down for a while",
            "input_series": [
                series("event_publish_failures_total", "0x5 1+1x40", **target("order_service"),
                       reason="unroutable"),
                series("event_publish_failures_total", "0x5 1+10x10 111x30",
                       **target("user_service"), reason="broker_unavailable"),
            ],
            "alert_rule_test": [
                expect("EventsUnroutable", "5m"),
                expect("EventsUnroutable", "9m", {"job": "order_service"}),
            ],
        },
        {
            "name": "a consumer falling behind",
            "input_series": [
                series("events_queue_depth", "0+200x40", **target("notification_service"),
                       service="notification_service"),
            ],
            "alert_rule_test": [
                expect("ConsumerLagHigh", "10m"),
                expect("ConsumerLagHigh", "20m", {"service": "notification_service"}),
            ],
        },
    ]  # fmt: skip


def test_every_alert_fires_when_it_should_and_only_then(tmp_path: Path) -> None:
    groups = scenarios()
    fired = {
        check["alertname"] for group in groups for check in group["alert_rule_test"]
        if check["exp_alerts"]
    }  # fmt: skip
    assert fired == {rule["alert"] for rule in alert_rules()}, "a firing case for every alert"
    # promtool compares annotations too: the text is checked above, the logic here.
    rules = load_yaml(ALERTS)
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations")
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules))
    tests = {
        "rule_files": ["alerts.yml"],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", **group} for group in groups],
    }
    (tmp_path / "alerts_test.yml").write_text(yaml.safe_dump(tests, sort_keys=False))
    result = run_promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


# --- the Grafana dashboard --------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board["panels"]:
        yield panel
        yield from panel.get("panels", [])  # inside a collapsed row


def queries(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, expr) of every panel target and template variable query."""
    for panel in panels(board):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r}", target["expr"]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            match = re.fullmatch(r"label_values\((.+),\s*\w+\)", text)
            yield f"variable {variable['name']!r}", match.group(1) if match else text


GRAFANA_VARIABLES = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}


def substituted(expr: str, variables: Iterable[str]) -> str:
    """The query as Grafana sends it, with its variables filled in."""
    known = dict(GRAFANA_VARIABLES) | dict.fromkeys(variables, ".*")

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in known, f"undefined variable ${name} in {expr}"
        return known[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, expr)


class TestDashboard:
    def test_parses_and_every_panel_has_a_query(self) -> None:
        board = dashboard()
        assert board["uid"]
        assert board["title"]
        shown = [panel for panel in panels(board) if panel["type"] != "row"]
        assert len(shown) >= 10
        ids = [panel["id"] for panel in panels(board)]
        assert len(ids) == len(set(ids)), "panel ids are unique"
        for panel in shown:
            assert panel["title"], panel["id"]
            assert panel.get("targets"), f"{panel['title']} has no query"
            for target in panel["targets"]:
                assert target.get("expr", "").strip(), panel["title"]
                assert target["refId"], panel["title"]

    def test_panels_do_not_overlap(self) -> None:
        taken: set[tuple[int, int]] = set()
        for panel in dashboard()["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] >= 0, panel["title"]
            assert grid["x"] + grid["w"] <= 24, panel["title"]
            cells = {
                (x, y)
                for x in range(grid["x"], grid["x"] + grid["w"])
                for y in range(grid["y"], grid["y"] + grid["h"])
            }
            assert not cells & taken, f"{panel['title']} overlaps another panel"
            taken |= cells

    def test_queries_use_only_exported_metrics_and_their_labels(self) -> None:
        board = dashboard()
        variables = [variable["name"] for variable in board["templating"]["list"]]
        for where, expr in queries(board):
            substituted(expr, variables)  # every variable it uses is defined
            query = Query(expr)
            assert query.metrics, where
            assert not query.unknown_metrics(), (where, query.unknown_metrics())
            assert not query.unknown_labels(), (where, query.unknown_labels())

    def test_shows_every_metric_the_services_export(self) -> None:
        used = set().union(*(Query(expr).metrics for _, expr in queries(dashboard())))
        shown = {name for name in SERIES if name in used}
        missing = {
            name for name in METRICS if not shown & {name, f"{name}_total", f"{name}_bucket"}
        }
        assert not missing, f"no panel shows {sorted(missing)}"

    def test_queries_parse(self, tmp_path: Path) -> None:
        """promtool parses each query, variables filled in, as a recording rule."""
        board = dashboard()
        variables = [variable["name"] for variable in board["templating"]["list"]]
        rules = [
            {"record": f"dashboard:query_{n}", "expr": substituted(expr, variables)}
            for n, (_, expr) in enumerate(queries(board))
        ]
        path = tmp_path / "dashboard-queries.yml"
        path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
        result = run_promtool("check", "rules", path.name, cwd=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr

    def test_uses_the_provisioned_data_sources(self) -> None:
        provisioned = {source["uid"]: source for source in load_yaml(DATASOURCES)["datasources"]}
        assert provisioned["prometheus"]["type"] == "prometheus"
        board = dashboard()
        for panel in panels(board):
            sources = [
                panel.get("datasource"),
                *(t.get("datasource") for t in panel.get("targets", [])),
            ]
            for source in filter(None, sources):
                assert source["uid"] in provisioned, panel["title"]
                assert source["type"] == provisioned[source["uid"]]["type"], panel["title"]


# --- the OpenTelemetry Collector --------------------------------------------------------------


def collector() -> dict[str, Any]:
    config: dict[str, Any] = load_yaml(COLLECTOR_CONFIG)
    return config


class TestCollector:
    def test_receives_otlp_on_both_ports_from_other_containers(self) -> None:
        protocols = collector()["receivers"]["otlp"]["protocols"]
        for protocol, port in (("grpc", 4317), ("http", 4318)):
            host, _, bound = protocols[protocol]["endpoint"].rpartition(":")
            assert (host, int(bound)) == ("0.0.0.0", port), protocol  # noqa: S104

    def test_forwards_traces_to_jaeger(self) -> None:
        config = collector()
        traces = config["service"]["pipelines"]["traces"]
        assert "otlp" in traces["receivers"]
        assert traces["processors"][0] == "memory_limiter", "shed load before anything else"
        (exporter,) = traces["exporters"]
        assert exporter.split("/")[0] == "otlp"
        assert config["exporters"][exporter]["endpoint"] == "jaeger:4317"

    def test_every_component_in_use_is_configured(self) -> None:
        config = collector()
        for pipeline in config["service"]["pipelines"].values():
            for kind in ("receivers", "processors", "exporters"):
                for component in pipeline.get(kind, []):
                    assert component in config[kind], f"{kind}: {component}"
        for extension in config["service"].get("extensions", []):
            assert extension in config["extensions"], extension


# --- docker-compose.yml -----------------------------------------------------------------------


def mounts(service: dict[str, Any]) -> dict[str, tuple[Path, bool]]:
    """Container path -> (host path, read-only) of a service's bind mounts."""
    found = {}
    for volume in service.get("volumes", []):
        source, target, *mode = str(volume).split(":")
        if source.startswith("/"):
            found[target] = (Path(source), mode == ["ro"])
    return found


def published(service: dict[str, Any]) -> set[tuple[str, int]]:
    ports = set()
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ports.add((port.get("host_ip", "0.0.0.0"), int(port["published"])))  # noqa: S104
        else:
            host, published_port, _ = str(port).split("/")[0].rsplit(":", 2)
            ports.add((host, int(published_port)))
    return ports


def flag(command: list[str], name: str) -> str:
    (value,) = [arg.split("=", 1)[1] for arg in command if arg.startswith(f"{name}=")]
    return value


def share_a_network(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return bool(set(a.get("networks", {})) & set(b.get("networks", {})))


class TestCompose:
    def test_prometheus_mounts_its_config_and_the_rules_it_loads(
        self, compose_config: dict[str, Any]
    ) -> None:
        prometheus = compose_config["services"]["prometheus"]
        mounted = mounts(prometheus)
        config_path = flag(prometheus["command"], "--config.file")
        assert mounted[config_path] == (PROMETHEUS_CONFIG, True)
        for rule_file in load_yaml(PROMETHEUS_CONFIG)["rule_files"]:
            in_container = str(PurePosixPath(config_path).parent / rule_file)
            assert mounted[in_container] == (PROMETHEUS_CONFIG.parent / rule_file, True)
        assert not prometheus.get("ports"), "Prometheus is reached through Grafana"
        storage = flag(prometheus["command"], "--storage.tsdb.path")
        assert any(str(v).split(":")[1] == storage for v in prometheus["volumes"]), "kept"

    def test_prometheus_reaches_every_service_it_scrapes(
        self, compose_config: dict[str, Any]
    ) -> None:
        services = compose_config["services"]
        for job in load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]:
            for host, port in scrape_targets(job):
                assert host in services, f"{job['job_name']}: no compose service {host}"
                assert compose_package(services[host]) == host
                assert port == PORTS[host]
                assert share_a_network(services["prometheus"], services[host]), host

    def test_grafana_is_provisioned_and_local_only(self, compose_config: dict[str, Any]) -> None:
        services = compose_config["services"]
        grafana = services["grafana"]
        mounted = mounts(grafana)
        provisioning = GRAFANA / "provisioning"
        assert mounted["/etc/grafana/provisioning/datasources"] == (
            provisioning / "datasources",
            True,
        )
        assert mounted["/etc/grafana/provisioning/dashboards"] == (
            provisioning / "dashboards",
            True,
        )
        (provider,) = load_yaml(DASHBOARD_PROVIDERS)["providers"]
        assert mounted[provider["options"]["path"]] == (DASHBOARD.parent, True)
        assert published(grafana) == {("127.0.0.1", 3000)}
        sources = {source["uid"]: source for source in load_yaml(DATASOURCES)["datasources"]}
        for source in sources.values():
            url = urlsplit(source["url"])
            assert url.hostname in services, source["name"]
            assert share_a_network(grafana, services[url.hostname]), source["name"]
        # Prometheus listens on its default port (no --web.listen-address), Jaeger's UI on 16686.
        assert urlsplit(sources["prometheus"]["url"]).netloc == "prometheus:9090"
        assert not [a for a in services["prometheus"]["command"] if "listen-address" in a]
        assert "backend" not in grafana["networks"], "Grafana needs only Prometheus and Jaeger"

    def test_traces_flow_from_every_service_to_jaeger(self, compose_config: dict[str, Any]) -> None:
        services = compose_config["services"]
        collector_service = services["otel-collector"]
        config_path = flag(collector_service["command"], "--config")
        assert mounts(collector_service)[config_path] == (COLLECTOR_CONFIG, True)
        http_port = int(
            collector()["receivers"]["otlp"]["protocols"]["http"]["endpoint"].rsplit(":", 1)[1]
        )
        python = {name: s for name, s in services.items() if compose_package(s) is not None}
        assert {compose_package(s) for s in python.values()} == set(SPECS)
        for name, service in python.items():
            endpoint = urlsplit(service["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"])
            assert (endpoint.scheme, endpoint.hostname, endpoint.port) == (
                "http",
                "otel-collector",
                http_port,
            ), name
            assert share_a_network(service, collector_service), name
            assert 0 <= float(service["environment"]["OTEL_TRACES_SAMPLER_ARG"]) <= 1, name
        jaeger = services["jaeger"]
        assert share_a_network(collector_service, jaeger)
        assert jaeger["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
        assert published(jaeger) == {("127.0.0.1", 16686)}
        assert not collector_service.get("ports")

    def test_the_monitoring_containers_are_locked_down(
        self, compose_config: dict[str, Any]
    ) -> None:
        for name in ("prometheus", "grafana", "otel-collector", "jaeger"):
            service = compose_config["services"][name]
            assert service.get("read_only") is True, name
            assert "ALL" in service.get("cap_drop", []), name
            assert "no-new-privileges:true" in service.get("security_opt", []), name
            assert service["restart"] == "unless-stopped", name
            for volume in service.get("volumes", []):
                source = str(volume).split(":")[0]
                if source.startswith("/"):
                    assert str(volume).endswith(":ro"), f"{name}: {volume}"


# --- Kubernetes ---------------------------------------------------------------------------------


def test_kubernetes_servers_may_export_spans_to_the_monitoring_namespace(
    overlays: dict[str, list[dict[str, Any]]],
) -> None:
    collector_pod = Pod("otel-collector", "monitoring", {"app.kubernetes.io/name": "collector"})
    elsewhere = Pod("otel-collector", "default", {"app.kubernetes.io/name": "collector"})
    for docs in overlays.values():
        policies, pods = of_kind(docs, "NetworkPolicy"), workload_pods(docs)
        for pkg in SPECS:
            server = pods[kube_name(pkg)]
            for port in (4317, 4318):
                assert allowed(policies, server, collector_pod, port), f"{pkg} -> :{port}"
                assert not allowed(policies, server, elsewhere, port), pkg
            assert not allowed(policies, server, collector_pod, 9090), pkg
