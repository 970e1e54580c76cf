from functools import lru_cache

from pydantic import model_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="DIRECTORY_", env_file=".env", extra="ignore")

    database_url: str = "sqlite:///./var/directory.db"
    port: int = 8001
    # Seconds allowed to fetch a Meeting Guide feed from a URL.
    feed_fetch_timeout: float = 20.0
    # Feeds fetched from a URL larger than this are refused.
    feed_max_bytes: int = 20_000_000

    @model_validator(mode="after")
    def check_event_keys(self):
        return self.refuse_development_event_keys()


@lru_cache
def get_settings() -> Settings:
    return Settings()
