"""Test support for the services: the pytest plugin (`service_testing.plugin`, registered
by this distribution's `pytest11` entry point) and the helpers its fixtures and the tests
use. Development only: no service depends on it, so no image contains it."""

from service_testing.broker import RABBITMQ_URL, delete_topology, unique_topology
from service_testing.checks import assert_problem, eventually
from service_testing.credentials import (
    production_credentials,
    service_headers,
    signs_internal_calls,
)
from service_testing.databases import (
    POSTGRES_ADMIN_URL,
    migrated_database,
    postgres_database,
    truncate_all,
)
from service_testing.hung import hung_process
from service_testing.otlp import OtlpReceiver, ReceivedSpan
from service_testing.rabbitmq_node import RabbitMQNode, private_rabbitmq
from service_testing.redis_server import private_redis
from service_testing.servers import (
    accept_local_tokens,
    free_port,
    hung_server,
    running_app,
    serve,
)
from service_testing.tokens import LocalTokens
from service_testing.webhooks import ReceivedWebhook, WebhookReceiver, unanswering_endpoint

__all__ = [
    "POSTGRES_ADMIN_URL",
    "RABBITMQ_URL",
    "LocalTokens",
    "OtlpReceiver",
    "RabbitMQNode",
    "ReceivedSpan",
    "ReceivedWebhook",
    "WebhookReceiver",
    "accept_local_tokens",
    "assert_problem",
    "delete_topology",
    "eventually",
    "free_port",
    "hung_process",
    "hung_server",
    "migrated_database",
    "postgres_database",
    "private_rabbitmq",
    "private_redis",
    "production_credentials",
    "running_app",
    "serve",
    "service_headers",
    "signs_internal_calls",
    "truncate_all",
    "unanswering_endpoint",
    "unique_topology",
]
