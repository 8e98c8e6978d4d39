"""Alembic environment of the order service."""

from order_service.config import get_settings
from order_service.models import Base
from shared.migrations import run_migrations

run_migrations(Base.metadata, get_settings().effective_database_url())
