from functools import lru_cache

from pydantic import model_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import DEV_FIELD_KEY, DEV_HASH_KEY, DEV_TRANSIT_KEY, ServiceSettings, common


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFICATIONS_", env_file=".env", extra="ignore")

    database_url: str = "sqlite:///./var/notifications.db"
    port: int = 8003
    # Fernet keys (comma-separated, newest first) for contact details at rest.
    encryption_keys: str = DEV_FIELD_KEY
    # Keys sealing contact details inside events; held only by referrals and notifications.
    contact_transit_keys: str = common("CONTACT_TRANSIT_KEYS", DEV_TRANSIT_KEY)
    # Key of the keyed hash that identifies opted-out numbers without storing them.
    hash_key: str = DEV_HASH_KEY

    @model_validator(mode="after")
    def check_keys(self):
        if self.environment == "production" and DEV_FIELD_KEY in self.encryption_keys:
            raise ValueError("production needs its own encryption keys, not the development key")
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
