from functools import lru_cache

from pydantic import Field
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
    # How often the scheduler looks for contact details to erase (and audit entries to prune).
    erasure_interval_seconds: float = 3600.0
    # The audit trail (views of contact details, changes to referrals) is kept this many days.
    audit_retention_days: int = Field(730, ge=1)

    def production_problems(self) -> list[str]:
        return super().production_problems() + self.transit_key_problems(self.contact_transit_keys)


@lru_cache
def get_settings() -> Settings:
    return Settings()
