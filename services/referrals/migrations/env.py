from services.referrals.models import Base
from services.referrals.runtime import runtime
from shared.db import run_alembic_env

run_alembic_env(Base.metadata, runtime.settings.database_url)
