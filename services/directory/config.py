from functools import lru_cache

from pydantic import model_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import DEV_FIELD_KEY, ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="DIRECTORY_", env_file=".env", extra="ignore")

    database_url: str = "sqlite:///./var/directory.db"
    port: int = 8001
    # Fernet keys (comma-separated, newest first) for contact details at rest
    # (meeting facilitators, site champions).
    encryption_keys: str = DEV_FIELD_KEY
    # Seconds allowed to fetch a Meeting Guide feed from a URL.
    feed_fetch_timeout: float = 20.0
    # Feeds fetched from a URL larger than this are refused.
    feed_max_bytes: int = 20_000_000

    @model_validator(mode="after")
    def check_keys(self):
        if self.environment == "production" and DEV_FIELD_KEY in self.encryption_keys:
            raise ValueError("production needs its own encryption keys, not the development key")
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
