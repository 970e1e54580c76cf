from services.directory.models import Base
from services.directory.runtime import runtime
from shared.db import run_alembic_env

run_alembic_env(Base.metadata, runtime.settings.database_url)
