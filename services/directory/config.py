from functools import lru_cache

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="DIRECTORY_", env_file=".env", extra="ignore")

    database_url: str = "sqlite:///./var/directory.db"
    port: int = 8001


@lru_cache
def get_settings() -> Settings:
    return Settings()
