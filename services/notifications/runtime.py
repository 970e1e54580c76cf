from pathlib import Path

from services.notifications.config import get_settings
from services.notifications.models import Base
from shared.runtime import ServiceRuntime

runtime = ServiceRuntime("notifications", get_settings, Base.metadata, Path(__file__).parent / "migrations")
