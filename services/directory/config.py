import ipaddress
from functools import lru_cache

from pydantic import Field, field_validator
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
    # Tests only: comma-separated networks (e.g. 127.0.0.0/8) feed URLs may reach although they
    # are loopback or private, for a local feed server. Production refuses to start with any.
    feed_allow_networks: str = ""
    # An import that would withdraw more than this share of a source's live meetings is held for an
    # admin's confirmation (when the source has at least FEED_HOLD_MIN_MEETINGS).
    feed_hold_share: float = Field(0.5, gt=0, le=1)
    feed_hold_min_meetings: int = Field(5, ge=1)
    # How often the scheduler looks for feed sources due an import.
    feed_check_seconds: float = Field(60.0, gt=0)
    # Reported problems (free text from the public) are deleted this many days after an admin closed them.
    change_request_retention_days: int = Field(90, ge=1)

    @field_validator("feed_allow_networks")
    @classmethod
    def networks(cls, value: str) -> str:
        for network in value.split(","):
            if network.strip():
                ipaddress.ip_network(network.strip(), strict=False)  # ValueError names the bad one
        return value

    def production_problems(self) -> list[str]:
        problems = super().production_problems()
        if self.feed_allow_networks.strip():
            problems.append("DIRECTORY_FEED_ALLOW_NETWORKS must be empty in production (it is for tests)")
        return problems


@lru_cache
def get_settings() -> Settings:
    return Settings()
