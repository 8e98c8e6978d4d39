# The two commands a newcomer needs: `make run` and `make test`.
.DEFAULT_GOAL := help
SHELL := /bin/bash

UV = $(shell ./scripts/bootstrap.sh)

.PHONY: help run test test-fast test-compose lint format bench bench-checkout bench-catalog bench-tracing load soak migrate clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

run: ## Migrate, seed and run every service and the gateway locally (SQLite) until Ctrl-C
	./scripts/ensure-rabbitmq.sh
	LOG_FORMAT=$${LOG_FORMAT:-auto} $(UV) run python -m devstack run

test: ## Every test: unit, integration (real PostgreSQL and RabbitMQ) and end-to-end through the gateway
	./scripts/ensure-postgres.sh
	./scripts/ensure-rabbitmq.sh
	./scripts/ensure-deploy-tools.sh
	./scripts/ensure-chromium.sh
	./scripts/ensure-containers.sh
	$(UV) run pytest

test-fast: ## The tests that need no PostgreSQL, RabbitMQ or podman
	$(UV) run pytest -m "not postgres and not rabbitmq and not compose"

test-compose: ## Only the compose stack under podman (images built, stack up, smoke journey)
	./scripts/ensure-containers.sh
	$(UV) run pytest -m compose

lint: ## ruff and mypy (strict)
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy $(wildcard shared/*/src dev/*/src *_service/src api_gateway/src)
	$(UV) run mypy bench load

format: ## Format and autofix
	$(UV) run ruff format .
	$(UV) run ruff check --fix .

bench: ## Gateway vs direct throughput with wrk (installs wrk if missing)
	./scripts/ensure-wrk.sh
	$(UV) run python bench/gateway.py

bench-checkout: ## Checkout (POST /api/v1/orders) throughput through the gateway on PostgreSQL
	./scripts/ensure-wrk.sh
	./scripts/ensure-postgres.sh
	./scripts/ensure-rabbitmq.sh
	$(UV) run python bench/checkout.py

USERS ?= 20
SPAWN ?= 2
DURATION ?= 60s
HOST ?= http://127.0.0.1:8000
load: ## Locust against the running system (make run): USERS=20 DURATION=60s HOST=...; table + invariants
	$(UV) run locust -f load/locustfile.py --headless --users $(USERS) --spawn-rate $(SPAWN) \
		--run-time $(DURATION) --host $(HOST) --only-summary --stop-timeout 10

SOAK_SECONDS ?= 600
soak: ## Ten minutes of Locust shoppers on two of every process, the broker and order_service restarted meanwhile; then the invariants
	./scripts/ensure-postgres.sh
	./scripts/ensure-rabbitmq.sh
	./scripts/ensure-deploy-tools.sh
	SOAK_SECONDS=$(SOAK_SECONDS) $(UV) run pytest tests/e2e/test_soak.py -q -s -p no:cacheprovider

bench-catalog: ## Catalog list, search and deep pages at 100,000 products vs 20, on PostgreSQL
	./scripts/ensure-wrk.sh
	./scripts/ensure-postgres.sh
	./scripts/ensure-rabbitmq.sh
	$(UV) run python bench/catalog.py

bench-tracing: ## What 10% of traces kept costs the direct and the gateway read, traced and untraced on one core
	./scripts/ensure-wrk.sh
	./scripts/ensure-rabbitmq.sh
	$(UV) run python bench/traced_read.py

migrate: ## Apply every service's migrations and seed the demo catalog
	$(UV) run python -m devstack migrate

clean: ## Remove local databases, keys and caches
	rm -rf .data .pytest_cache .mypy_cache .ruff_cache
