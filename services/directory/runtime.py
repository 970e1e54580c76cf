from pathlib import Path

from services.directory.config import get_settings
from services.directory.models import Base
from shared.runtime import ServiceRuntime

runtime = ServiceRuntime("directory", get_settings, Base.metadata, Path(__file__).parent / "migrations")
