"""Configuration read from the environment (and an optional ``.env`` file).

Every service reads its own prefixed settings (``DIRECTORY_DATABASE_URL``...) plus a few
common ones (``REDIS_URL``, ``JWT_SECRET``...). Defaults run everything locally with SQLite
files under ``./var/`` so no database server is needed.
"""

from __future__ import annotations

import base64
import binascii
from typing import Literal

from pydantic import AliasChoices, Field, field_validator, model_validator
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
DEV_KEYS = (DEV_JWT_SECRET, DEV_FIELD_KEY, DEV_TRANSIT_KEY, DEV_HASH_KEY, *DEV_EVENT_KEYS.values())

# A production secret (JWT and callback secrets, the hash key) is at least this long, has
# at least MIN_SECRET_DISTINCT different characters and is not a repeated pattern. 32 random
# bytes as hex (64 characters) or base64 pass with a wide margin; "x" * 40 or "abcd" * 8 do not.
MIN_SECRET_BYTES = 32
MIN_SECRET_DISTINCT = 12
# Production refuses a JWT_MAX_LIFETIME_HOURS above this.
JWT_MAX_LIFETIME_CEILING_HOURS = 24.0
GENERATE_SECRET = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
GENERATE_FERNET_KEY = "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"


def common(name: str, default, **kw):
    """A setting shared by all services, read without the service prefix."""
    return Field(default, validation_alias=AliasChoices(name, name.lower()), **kw)


def low_entropy(value: str | bytes) -> bool:
    """Too few different characters, or one short pattern repeated ("abcabcabc...")."""
    if len(set(value)) < MIN_SECRET_DISTINCT:
        return True
    return any(value[period:] == value[:-period] for period in range(1, len(value) // 2 + 1))


def secret_problems(env: str, value: str | None, *, dev_value: str | None = None) -> list[str]:
    """Why ``value`` is not a production secret (never quoting it), or nothing."""
    if not value:
        return [f"{env} is not set; generate one with {GENERATE_SECRET}"]
    if value in DEV_KEYS or value == dev_value:
        return [f"{env} is the development value; generate one with {GENERATE_SECRET}"]
    if len(value.encode()) < MIN_SECRET_BYTES:
        return [f"{env} is shorter than {MIN_SECRET_BYTES} bytes; generate one with {GENERATE_SECRET}"]
    if low_entropy(value):
        return [f"{env} is too predictable (fewer than {MIN_SECRET_DISTINCT} different characters or a repeated "
                f"pattern); generate one with {GENERATE_SECRET}"]
    return []


def key_list(keys: str) -> list[str]:
    return [k.strip() for k in keys.split(",") if k.strip()]


def fernet_key_problems(env: str, keys: str) -> list[str]:
    """Why a comma-separated list of Fernet keys is not fit for production (never quoting a key)."""
    found = key_list(keys)
    if not found:
        return [f"{env} is not set; generate a key with {GENERATE_FERNET_KEY}"]
    problems = []
    for number, key in enumerate(found, start=1):
        which = f"{env} (key {number} of {len(found)})"
        if key in DEV_KEYS:
            problems.append(f"{which} is a development key; generate one with {GENERATE_FERNET_KEY}")
            continue
        try:
            raw = base64.urlsafe_b64decode(key.encode())
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) != 32:
            problems.append(f"{which} is not a Fernet key (32 bytes, url-safe base64); "
                            f"generate one with {GENERATE_FERNET_KEY}")
        elif low_entropy(raw):
            problems.append(f"{which} is too predictable to be a random key; generate one with {GENERATE_FERNET_KEY}")
    return problems


class ProductionRefused(ValueError):
    """Production settings that must be fixed first: every problem at once, no secret quoted."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"FAMA_ENV=production refuses to start until these settings are fixed:\n{lines}")


class ServiceSettings(BaseSettings):
    """Base of each service's settings; subclasses set ``env_prefix``."""

    # hide_input_in_errors: a refused setting is named, its value (maybe a secret) never printed.
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True,
                                      hide_input_in_errors=True)

    environment: Literal["development", "test", "production"] = common("FAMA_ENV", "development")
    redis_url: str = common("REDIS_URL", "redis://127.0.0.1:6379/0")
    # With REDIS_URL=sentinel://:password@host:26379;sentinel://host2:26379/0 (Redis Sentinel):
    # the name of the master the sentinels watch (shared/redis_client.py).
    redis_sentinel_master: str = common("REDIS_SENTINEL_MASTER", "mymaster")
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
    # Tokens valid for longer than this (exp - iat) are refused, in every environment.
    jwt_max_lifetime_hours: float = common("JWT_MAX_LIFETIME_HOURS", 12.0, gt=0)
    outbox_sweep_seconds: float = common("OUTBOX_SWEEP_SECONDS", 5.0)
    # An event no subscriber has confirmed this long after it was sent is sent again (then
    # after twice as long, and so on): it covers a message the broker lost.
    outbox_resend_seconds: float = common("OUTBOX_RESEND_SECONDS", 300.0)
    max_request_bytes: int = common("MAX_REQUEST_BYTES", 5_000_000)
    # Requests a minute per client address on public endpoints (search, feed) and on callbacks; 0 = no limit.
    public_rate_limit_per_minute: int = common("PUBLIC_RATE_LIMIT_PER_MINUTE", 300)
    callback_rate_limit_per_minute: int = common("CALLBACK_RATE_LIMIT_PER_MINUTE", 6000)

    # Addresses or networks (comma-separated, e.g. "10.0.0.0/8,127.0.0.1") of the reverse proxies whose
    # X-Forwarded-For / X-Forwarded-Proto are believed; "*" trusts every peer (only when nothing but the
    # proxy can reach the API). The same variable uvicorn's --proxy-headers reads.
    forwarded_allow_ips: str = common("FORWARDED_ALLOW_IPS", "127.0.0.1")
    # Key of the page forms' token HMAC; unset: derived from the service's secrets. Every process of a
    # service needs the same one (a form rendered by one is posted to another).
    csrf_secret: str | None = common("CSRF_SECRET", None)

    # Single sign-on for the pages: OpenID Connect (authorization code with PKCE) at this issuer
    # (discovered at ISSUER/.well-known/openid-configuration). Unset: the development token sign-in.
    oidc_issuer: str | None = common("OIDC_ISSUER", None)
    oidc_client_id: str | None = common("OIDC_CLIENT_ID", None)
    oidc_client_secret: str | None = common("OIDC_CLIENT_SECRET", None)
    oidc_scopes: str = common("OIDC_SCOPES", "openid profile email")
    # How the sign-in page names the provider ("NHS Birmingham", "Croydon Council").
    oidc_provider_name: str = common("OIDC_PROVIDER_NAME", "your organisation")
    # Which claim of the provider's tokens (ID tokens at sign-in, bearer tokens on the APIs) carries the
    # role, site and region, and what its values mean: a JSON object {"claim value": "FAMA value"}.
    # An empty map takes the values as they are (the role must then be a FAMA role's name).
    oidc_role_claim: str = common("OIDC_ROLE_CLAIM", "role")
    oidc_role_map: dict[str, Literal["keyworker", "site_lead", "commissioner", "admin"]] = common("OIDC_ROLE_MAP", {})
    oidc_site_claim: str = common("OIDC_SITE_CLAIM", "site")
    oidc_site_map: dict[str, str] = common("OIDC_SITE_MAP", {})
    oidc_region_claim: str = common("OIDC_REGION_CLAIM", "region")
    oidc_region_map: dict[str, str] = common("OIDC_REGION_MAP", {})
    # A page session (single sign-on) lasts this long; then its holder signs in again.
    session_hours: float = common("SESSION_HOURS", 8.0, gt=0)
    # Key signing the session cookie; unset: derived from the service's secrets. Every process of a
    # service needs the same one.
    session_secret: str | None = common("SESSION_SECRET", None)

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

    @classmethod
    def env_name(cls, field_name: str) -> str:
        """The environment variable a field is read from (``JWT_SECRET``, ``REFERRALS_ENCRYPTION_KEYS``)."""
        alias = cls.model_fields[field_name].validation_alias
        if alias is not None:
            return alias.choices[0]
        return f"{cls.model_config.get('env_prefix', '')}{field_name}".upper()

    def production_problems(self) -> list[str]:
        """Everything that must change before production may start; services add their own."""
        problems = []
        if self.jwt_jwks_url is None:
            problems += secret_problems("JWT_SECRET", self.jwt_secret)
        elif not self.jwt_jwks_url.startswith("https://"):
            problems.append("JWT_JWKS_URL must be an https:// address")
        if self.jwt_max_lifetime_hours > JWT_MAX_LIFETIME_CEILING_HOURS:
            problems.append(f"JWT_MAX_LIFETIME_HOURS is above {JWT_MAX_LIFETIME_CEILING_HOURS:g} hours; "
                            "production tokens must be short-lived")
        problems += fernet_key_problems(self.env_name("encryption_keys"), self.encryption_keys)
        if self.csrf_secret is not None:
            problems += secret_problems("CSRF_SECRET", self.csrf_secret)
        if self.session_secret is not None:
            problems += secret_problems("SESSION_SECRET", self.session_secret)
        if self.oidc_issuer is not None and not self.oidc_issuer.startswith("https://"):
            problems.append("OIDC_ISSUER must be an https:// address")
        if self.session_hours > JWT_MAX_LIFETIME_CEILING_HOURS:
            problems.append(f"SESSION_HOURS is above {JWT_MAX_LIFETIME_CEILING_HOURS:g} hours; staff sign in at least daily")
        for producer, keys in self.event_keys().items():
            env = self.env_name(f"{producer}_event_keys")
            for number, key in enumerate(key_list(keys) or [""], start=1):
                problems += secret_problems(env if number == 1 else f"{env} (key {number})", key)
        return problems

    def transit_key_problems(self, transit_keys: str) -> list[str]:
        """CONTACT_TRANSIT_KEYS (referrals, notifications): real keys, none shared with the field keys."""
        problems = fernet_key_problems("CONTACT_TRANSIT_KEYS", transit_keys)
        if set(key_list(transit_keys)) & set(key_list(self.encryption_keys)):
            problems.append(f"CONTACT_TRANSIT_KEYS and {self.env_name('encryption_keys')} share a key; "
                            "each needs its own")
        return problems

    @field_validator("jwt_jwks_url", "csrf_secret", "oidc_issuer", "oidc_client_id", "oidc_client_secret",
                     "session_secret", mode="before")
    @classmethod
    def _empty_is_unset(cls, value):
        """``JWT_JWKS_URL=`` (as compose passes an unset variable) means not set."""
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def check_sign_on(self):
        if self.oidc_issuer is not None and self.oidc_client_id is None:
            raise ValueError("OIDC_ISSUER is set without OIDC_CLIENT_ID: set both (single sign-on) or neither")
        return self

    @model_validator(mode="after")
    def check_production(self):
        if self.environment == "production":
            problems = self.production_problems()
            if problems:
                raise ProductionRefused(problems)
        return self
