from functools import lru_cache

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import DEV_TRANSIT_KEY, ServiceSettings, common


class Settings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="REFERRALS_", env_file=".env", extra="ignore")

    database_url: str = "sqlite:///./var/referrals.db"
    port: int = 8002
    # Keys sealing contact details inside events; held only by referrals and notifications.
    contact_transit_keys: str = common("CONTACT_TRANSIT_KEYS", DEV_TRANSIT_KEY)
    # Contact details of a referral are erased this many days after it ended.
    retention_days: int = Field(30, ge=0)
    # How often the scheduler looks for contact details to erase.
    erasure_interval_seconds: float = 3600.0

    @model_validator(mode="after")
    def check_event_keys(self):
        return self.refuse_development_event_keys()


@lru_cache
def get_settings() -> Settings:
    return Settings()
