"""Configuration read from the environment (and an optional ``.env`` file).

Every service reads its own prefixed settings (``DIRECTORY_DATABASE_URL``...) plus a few
common ones (``REDIS_URL``, ``JWT_SECRET``...). Defaults run everything locally with SQLite
files under ``./var/`` so no database server is needed.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Development-only keys: production refuses to start with them (see check_production).
DEV_JWT_SECRET = "dev-only-jwt-secret-change-me-in-production-000000"
DEV_FIELD_KEY = "ZGV2LW9ubHktZmllbGQta2V5LWNoYW5nZS1tZS0wMDA="
DEV_TRANSIT_KEY = "ZGV2LW9ubHktdHJhbnNpdC1rZXktY2hhbmdlLW1lLTA="
DEV_HASH_KEY = "dev-only-hash-key-change-me"
# Keys each producer signs its events with (HMAC-SHA256); development only, like the others.
DEV_EVENT_KEYS = {
    "directory": "dev-only-directory-event-key-change-me-0000000",
    "referrals": "dev-only-referrals-event-key-change-me-0000000",
    "notifications": "dev-only-notifications-event-key-change-me-00",
}


def common(name: str, default, **kw):
    """A setting shared by all services, read without the service prefix."""
    return Field(default, validation_alias=AliasChoices(name, name.lower()), **kw)


class ServiceSettings(BaseSettings):
    """Base of each service's settings; subclasses set ``env_prefix``."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    environment: Literal["development", "test", "production"] = common("FAMA_ENV", "development")
    redis_url: str = common("REDIS_URL", "redis://127.0.0.1:6379/0")
    # Prefix for every Redis key (broker queues, rate limits) so several deployments or
    # test runs can share one Redis without seeing each other's messages.
    redis_key_prefix: str = common("REDIS_KEY_PREFIX", "")
    # Seconds before Redis hands an unacknowledged task to another worker.
    visibility_timeout: int = common("CELERY_VISIBILITY_TIMEOUT", 600)
    log_level: str = common("LOG_LEVEL", "INFO")
    jwt_secret: str = common("JWT_SECRET", DEV_JWT_SECRET)
    jwt_jwks_url: str | None = common("JWT_JWKS_URL", None)
    jwt_issuer: str = common("JWT_ISSUER", "fama")
    jwt_audience: str = common("JWT_AUDIENCE", "fama")
    outbox_sweep_seconds: float = common("OUTBOX_SWEEP_SECONDS", 5.0)
    # An event no subscriber has confirmed this long after it was sent is sent again (then
    # after twice as long, and so on): it covers a message the broker lost.
    outbox_resend_seconds: float = common("OUTBOX_RESEND_SECONDS", 300.0)
    max_request_bytes: int = common("MAX_REQUEST_BYTES", 5_000_000)
    # Requests a minute per client address on public endpoints (search, feed) and on callbacks; 0 = no limit.
    public_rate_limit_per_minute: int = common("PUBLIC_RATE_LIMIT_PER_MINUTE", 300)
    callback_rate_limit_per_minute: int = common("CALLBACK_RATE_LIMIT_PER_MINUTE", 6000)

    # Where people reach each service's pages, for links between them (never called server-side).
    directory_public_url: str = common("DIRECTORY_PUBLIC_URL", "http://127.0.0.1:8001")
    referrals_public_url: str = common("REFERRALS_PUBLIC_URL", "http://127.0.0.1:8002")
    notifications_public_url: str = common("NOTIFICATIONS_PUBLIC_URL", "http://127.0.0.1:8003")

    database_url: str = "sqlite:///./var/service.db"
    # Fernet keys (comma-separated, newest first) for the personal data this service keeps at rest.
    encryption_keys: str = DEV_FIELD_KEY

    # Event signing keys per producer (comma-separated, newest first: the first signs, any
    # verifies). A service signs with its own and verifies those of the producers it hears.
    directory_event_keys: str = common("DIRECTORY_EVENT_KEYS", DEV_EVENT_KEYS["directory"])
    referrals_event_keys: str = common("REFERRALS_EVENT_KEYS", DEV_EVENT_KEYS["referrals"])
    notifications_event_keys: str = common("NOTIFICATIONS_EVENT_KEYS", DEV_EVENT_KEYS["notifications"])
    # Outbox rows confirmed by their subscriber are deleted after this many days.
    outbox_retention_days: float = common("OUTBOX_RETENTION_DAYS", 7.0, ge=0)
    # Inbox rows (event ids) are deleted after this many days: far longer than any redelivery
    # (the outbox resends for 6 days at most), so a late copy is still recognised.
    inbox_retention_days: float = common("INBOX_RETENTION_DAYS", 14.0, ge=7)
    # How often the scheduler prunes the outbox and inbox.
    event_prune_seconds: float = common("EVENT_PRUNE_SECONDS", 3600.0, gt=0)

    def event_keys(self) -> dict[str, str]:
        """Each producer's event key list."""
        return {producer: getattr(self, f"{producer}_event_keys") for producer in DEV_EVENT_KEYS}

    def refuse_development_event_keys(self):
        """Each service's last check (its config's ``check_event_keys``): production must not sign
        or verify events with a development key."""
        if self.environment == "production":
            for producer, keys in self.event_keys().items():
                if DEV_EVENT_KEYS[producer] in [k.strip() for k in keys.split(",")]:
                    raise ValueError(f"production needs its own {producer.upper()}_EVENT_KEYS, not the development key")
        return self

    @model_validator(mode="after")
    def check_production(self):
        if self.environment == "production":
            if self.jwt_jwks_url is None and self.jwt_secret == DEV_JWT_SECRET:
                raise ValueError("production needs JWT_JWKS_URL or a JWT_SECRET other than the development one")
            if DEV_FIELD_KEY in self.encryption_keys:
                raise ValueError("production needs its own encryption keys, not the development key")
        return self
