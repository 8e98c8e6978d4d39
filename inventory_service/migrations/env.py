"""Alembic environment of the inventory service."""

from inventory_service.config import get_settings
from inventory_service.models import Base
from shared.migrations import run_migrations

run_migrations(Base.metadata, get_settings().effective_database_url())
