from services.notifications.models import Base
from services.notifications.runtime import runtime
from shared.db import run_alembic_env

run_alembic_env(Base.metadata, runtime.settings.database_url)
