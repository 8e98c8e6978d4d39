"""Alembic environment of the product service."""

from product_service.config import get_settings
from product_service.models import Base
from shared.migrations import run_migrations

run_migrations(Base.metadata, get_settings().effective_database_url())
