# The image of every service and of the gateway: one definition, the service named by a
# build argument. Build it from the repository root (the uv workspace):
#
#   docker build --build-arg SERVICE=user_service --build-arg PORT=8001 \
#       -t ecommerce/user-service:0.1.0 .
#   docker build --build-arg SERVICE=api_gateway --build-arg PORT=8000 \
#       --build-arg PROXY_HEADERS=false -t ecommerce/api-gateway:0.1.0 .
#
# docker-compose.yml passes the same arguments for each service. BASE_IMAGE and UV_IMAGE
# say where Python and uv come from (python:3.11-slim and uv's own image by default; any
# Debian-like image with python3.11 on PATH will do, which is how `make test` builds the
# images without a registry).
#
# One uvicorn process per container: scale with replicas (compose `--scale`, a
# Kubernetes HPA), not with workers. Migrations are a separate one-shot run of the same
# image, before the new version starts (images of services without a database have none):
#
#   docker run --rm -e DATABASE_URL=postgresql+asyncpg://... ecommerce/user-service:0.1.0 \
#       migrate user_service/alembic.ini

ARG BASE_IMAGE=python:3.11-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

FROM ${UV_IMAGE} AS uv

FROM ${BASE_IMAGE} AS builder
ARG SERVICE
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /src
# Third-party dependencies first, from the lock alone (it pins every workspace member's
# dependencies): this layer is rebuilt only when the lock changes, not on a source edit.
COPY uv.lock pyproject.toml ./
RUN --mount=type=cache,target=/root/.cache/uv \
    test -n "${SERVICE}" && uv sync --frozen --no-dev --package "${SERVICE}" --no-install-workspace
# Then the workspace (.dockerignore leaves tests and local state out): uv installs this
# service and the workspace packages it depends on as wheels (not editable), so the
# runtime stage needs only /app, no source tree.
COPY . .
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --package "${SERVICE}" --no-editable
# What `migrate` needs besides the venv, for a service with a database.
RUN if [ -f "${SERVICE}/alembic.ini" ]; then \
        mkdir -p "/app/${SERVICE}" \
        && cp -r "${SERVICE}/alembic.ini" "${SERVICE}/migrations" "/app/${SERVICE}/"; \
    fi

FROM ${BASE_IMAGE} AS runtime
ARG SERVICE
ARG PORT
# The gateway decides itself which X-Forwarded-For hops to believe (TRUSTED_PROXIES), so
# a client cannot pick the address it is rate-limited under by sending its own header:
# it is built with PROXY_HEADERS=false. A service believes the hop in front of it.
ARG PROXY_HEADERS=true
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin app \
    && install -d -o 10001 -g 10001 -m 0700 /data
# uvicorn reads its command line from UVICORN_* variables, so the one CMD below serves
# every service. Its loop is uvloop accepting bursts of connections at once
# (shared/kit/src/shared/eventloop.py says why).
ENV PATH="/app/.venv/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DATA_DIR=/data \
    UVICORN_APP="${SERVICE}.main:create_app" \
    UVICORN_FACTORY=true \
    UVICORN_HOST=0.0.0.0 \
    UVICORN_PORT="${PORT}" \
    UVICORN_PROXY_HEADERS="${PROXY_HEADERS}" \
    UVICORN_FORWARDED_ALLOW_IPS="*" \
    UVICORN_ACCESS_LOG=false \
    UVICORN_LOOP=shared.eventloop:new_event_loop
WORKDIR /app
COPY --from=builder /app /app
COPY deploy/migrate.sh /usr/local/bin/migrate
USER 10001:10001
EXPOSE ${PORT}
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD python -c "import os, urllib.request as r; r.urlopen('http://127.0.0.1:' + os.environ['UVICORN_PORT'] + '/health/live', timeout=2)"
CMD ["uvicorn"]
