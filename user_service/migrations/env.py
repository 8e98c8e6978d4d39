from shared.migrations import run_migrations
from user_service.config import get_settings
from user_service.models import Base

run_migrations(Base.metadata, get_settings().effective_database_url())
