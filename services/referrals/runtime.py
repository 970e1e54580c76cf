from pathlib import Path

from services.referrals.config import get_settings
from services.referrals.models import Base
from shared.runtime import ServiceRuntime

runtime = ServiceRuntime("referrals", get_settings, Base.metadata, Path(__file__).parent / "migrations")
