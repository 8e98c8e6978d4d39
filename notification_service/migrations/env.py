"""Alembic environment of the notification service."""

from notification_service.config import get_settings
from notification_service.models import Base
from shared.migrations import run_migrations

run_migrations(Base.metadata, get_settings().effective_database_url())
