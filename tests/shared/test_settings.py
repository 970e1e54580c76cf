"""Production refuses to start with development, short, predictable or misplaced secrets, naming
every setting to fix at once and never printing a value; services read their own prefix;
``fama config`` never shows a secret, not even a password inside a URL."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from fama.cli import app as cli
from fama.cli import mask_url
from services.directory.config import Settings as DirectorySettings
from services.notifications.config import DEV_CALLBACK_TOKEN
from services.notifications.config import Settings as NotificationsSettings
from services.referrals.config import Settings as ReferralsSettings
from shared.crypto import generate_key
from shared.settings import DEV_EVENT_KEYS, DEV_FIELD_KEY, DEV_HASH_KEY, DEV_JWT_SECRET, DEV_TRANSIT_KEY

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {"directory": DirectorySettings, "referrals": ReferralsSettings, "notifications": NotificationsSettings}


def strong() -> dict:
    """A production configuration of freshly generated secrets, as the README tells operators to make."""
    return {
        "environment": "production", "jwt_secret": secrets.token_urlsafe(32), "encryption_keys": generate_key(),
        "contact_transit_keys": generate_key(), "callback_token": secrets.token_urlsafe(32),
        "hash_key": secrets.token_hex(32), "sms_provider": "notify", "email_provider": "smtp",
        "notify_api_key": "fama_live-" + secrets.token_hex(16),
        **{f"{name}_event_keys": secrets.token_urlsafe(32) for name in SERVICES},
    }


def fields_of(service: str, values: dict) -> dict:
    return {k: v for k, v in values.items() if k in SERVICES[service].model_fields}


def refusal(service: str, **changes) -> str:
    with pytest.raises(ValidationError) as caught:
        SERVICES[service](**fields_of(service, {**strong(), **changes}))
    return str(caught.value)


def test_a_strong_production_configuration_starts_every_service():
    values = strong()
    for service, settings_class in SERVICES.items():
        settings = settings_class(**fields_of(service, values))
        assert settings.environment == "production" and settings.production_problems() == []


FERNET_LOOKALIKE = "A" * 43 + "="  # decodes to 32 zero bytes: a Fernet key by shape, not a random one


@pytest.mark.parametrize(("service", "field", "value", "setting"), [
    ("referrals", "jwt_secret", DEV_JWT_SECRET, "JWT_SECRET"),
    ("referrals", "jwt_secret", "x", "JWT_SECRET"),
    ("referrals", "jwt_secret", "Kq3!vP9z", "JWT_SECRET"),  # short
    ("referrals", "jwt_secret", "x" * 40, "JWT_SECRET"),  # one character
    ("referrals", "jwt_secret", "abcdefghijklmnop" * 3, "JWT_SECRET"),  # a repeated pattern
    ("referrals", "jwt_secret", "aAbB0011223344aAbB0011223344aabb", "JWT_SECRET"),  # 9 distinct characters
    ("referrals", "encryption_keys", DEV_FIELD_KEY, "REFERRALS_ENCRYPTION_KEYS"),
    ("referrals", "encryption_keys", "k", "REFERRALS_ENCRYPTION_KEYS"),
    ("referrals", "encryption_keys", "a passphrase from a secrets manager", "REFERRALS_ENCRYPTION_KEYS"),
    ("referrals", "encryption_keys", FERNET_LOOKALIKE, "REFERRALS_ENCRYPTION_KEYS"),
    ("referrals", "encryption_keys", "", "REFERRALS_ENCRYPTION_KEYS"),
    ("directory", "encryption_keys", DEV_TRANSIT_KEY, "DIRECTORY_ENCRYPTION_KEYS"),
    ("notifications", "encryption_keys", f"{generate_key()},{DEV_FIELD_KEY}", "NOTIFICATIONS_ENCRYPTION_KEYS"),
    ("referrals", "contact_transit_keys", DEV_TRANSIT_KEY, "CONTACT_TRANSIT_KEYS"),
    ("notifications", "contact_transit_keys", DEV_TRANSIT_KEY, "CONTACT_TRANSIT_KEYS"),
    ("notifications", "contact_transit_keys", "t", "CONTACT_TRANSIT_KEYS"),
    ("notifications", "callback_token", DEV_CALLBACK_TOKEN, "NOTIFICATIONS_CALLBACK_TOKEN"),
    ("notifications", "callback_token", "t", "NOTIFICATIONS_CALLBACK_TOKEN"),
    ("notifications", "callback_token", "t" * 32, "NOTIFICATIONS_CALLBACK_TOKEN"),
    ("notifications", "hash_key", DEV_HASH_KEY, "NOTIFICATIONS_HASH_KEY"),
    ("notifications", "hash_key", "h" * 32, "NOTIFICATIONS_HASH_KEY"),
    ("notifications", "sms_provider", "dev", "NOTIFICATIONS_SMS_PROVIDER"),
    ("notifications", "email_provider", "dev", "NOTIFICATIONS_EMAIL_PROVIDER"),
    ("notifications", "notify_api_key", None, "NOTIFICATIONS_NOTIFY_API_KEY"),
    ("referrals", "jwt_max_lifetime_hours", 24 * 365 * 100, "JWT_MAX_LIFETIME_HOURS"),
    ("directory", "feed_allow_networks", "127.0.0.0/8", "DIRECTORY_FEED_ALLOW_NETWORKS"),
    ("referrals", "jwt_jwks_url", "http://idp.example/jwks", "JWT_JWKS_URL"),
    ("directory", "referrals_event_keys", DEV_EVENT_KEYS["referrals"], "REFERRALS_EVENT_KEYS"),
    ("referrals", "notifications_event_keys", "short-key", "NOTIFICATIONS_EVENT_KEYS"),
    ("notifications", "directory_event_keys", f"{secrets.token_urlsafe(32)},{DEV_EVENT_KEYS['directory']}",
     "DIRECTORY_EVENT_KEYS"),
])
def test_each_weak_value_is_refused_naming_the_setting_and_not_the_value(service, field, value, setting):
    message = refusal(service, **{field: value})
    assert setting in message
    assert "refuses to start" in message
    if isinstance(value, str) and len(value) > 1 and field not in ("sms_provider", "email_provider"):
        assert value not in message and value.split(",")[-1] not in message


def test_the_same_key_for_field_and_transit_encryption_is_refused():
    key = generate_key()
    for service in ("referrals", "notifications"):
        message = refusal(service, encryption_keys=key, contact_transit_keys=f"{generate_key()},{key}")
        assert "CONTACT_TRANSIT_KEYS" in message and f"{service.upper()}_ENCRYPTION_KEYS share a key" in message
        assert key not in message


def test_every_problem_is_reported_at_once():
    with pytest.raises(ValidationError) as caught:
        NotificationsSettings(environment="production")  # every development default
    message = str(caught.value)
    for setting in ("JWT_SECRET", "NOTIFICATIONS_ENCRYPTION_KEYS", "CONTACT_TRANSIT_KEYS",
                    "NOTIFICATIONS_CALLBACK_TOKEN", "NOTIFICATIONS_HASH_KEY", "NOTIFICATIONS_SMS_PROVIDER",
                    "NOTIFICATIONS_EMAIL_PROVIDER"):
        assert setting in message
    assert caught.value.error_count() == 1  # one message listing them all
    for dev in (DEV_JWT_SECRET, DEV_FIELD_KEY, DEV_TRANSIT_KEY, DEV_CALLBACK_TOKEN, DEV_HASH_KEY):
        assert dev not in message


def test_a_jwks_url_replaces_the_jwt_secret():
    values = {**strong(), "jwt_secret": DEV_JWT_SECRET, "jwt_jwks_url": "https://idp.example/jwks"}
    assert ReferralsSettings(**fields_of("referrals", values)).jwt_jwks_url == "https://idp.example/jwks"


def test_development_and_test_keep_their_development_defaults():
    assert ReferralsSettings(environment="test").jwt_secret == DEV_JWT_SECRET
    assert NotificationsSettings(environment="development").sms_provider == "dev"


def start(service: str, env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    """Import the service's app and its worker module in a fresh process, as `uvicorn`/`celery` would."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("JWT_", "CONTACT_", "DIRECTORY_", "REFERRALS_", "NOTIFICATIONS_"))}
    for name in SERVICES:
        clean[f"{name.upper()}_DATABASE_URL"] = f"sqlite:///{tmp_path}/{name}.db"
    code = f"import services.{service}.api, services.{service}.tasks; print('started')"
    return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={**clean, "PYTHONPATH": str(ROOT), **env},
                          capture_output=True, text=True, timeout=120)


def test_the_services_refuse_to_start_in_production_with_weak_secrets_and_start_with_strong_ones(tmp_path):
    weak_jwt, weak_token = "short-jwt-secret", "Tok3n-" * 8
    weak = {"FAMA_ENV": "production", "JWT_SECRET": weak_jwt, "NOTIFICATIONS_CALLBACK_TOKEN": weak_token}
    refused = start("notifications", weak, tmp_path)
    assert refused.returncode != 0 and "started" not in refused.stdout
    assert "JWT_SECRET" in refused.stderr and "NOTIFICATIONS_CALLBACK_TOKEN" in refused.stderr
    assert "NOTIFICATIONS_SMS_PROVIDER" in refused.stderr
    assert weak_jwt not in refused.stderr and weak_token not in refused.stderr

    values = strong()
    good = {"FAMA_ENV": "production", "JWT_SECRET": values["jwt_secret"], "CONTACT_TRANSIT_KEYS": generate_key(),
            "NOTIFICATIONS_CALLBACK_TOKEN": values["callback_token"], "NOTIFICATIONS_HASH_KEY": values["hash_key"],
            "NOTIFICATIONS_SMS_PROVIDER": "notify", "NOTIFICATIONS_EMAIL_PROVIDER": "notify",
            "NOTIFICATIONS_NOTIFY_API_KEY": values["notify_api_key"],
            **{f"{name.upper()}_EVENT_KEYS": values[f"{name}_event_keys"] for name in SERVICES}}
    for service in SERVICES:
        good[f"{service.upper()}_ENCRYPTION_KEYS"] = generate_key()
    for service in SERVICES:
        result = start(service, good, tmp_path)
        assert result.returncode == 0 and "started" in result.stdout, result.stderr[-2000:]


def test_each_service_reads_its_own_prefixed_settings(monkeypatch):
    monkeypatch.setenv("REFERRALS_RETENTION_DAYS", "45")
    monkeypatch.setenv("NOTIFICATIONS_QUIET_START", "22:00")
    monkeypatch.setenv("REDIS_URL", "redis://example.invalid:6379/3")
    assert ReferralsSettings().retention_days == 45
    assert NotificationsSettings().quiet_start == "22:00"
    assert ReferralsSettings().redis_url == NotificationsSettings().redis_url == "redis://example.invalid:6379/3"


@pytest.mark.parametrize(("url", "shown", "password"), [
    ("redis://:Zq9pw@cache:6379/0", "redis://:***@cache:6379/0", "Zq9pw"),
    ("rediss://default:Zq9pw@cache:6380/1", "rediss://default:***@cache:6380/1", "Zq9pw"),
    ("postgresql://u:p@ss@db/directory", "postgresql://u:***@db/directory", "p@ss"),
    ("postgresql+psycopg://fama:s/3?c#r@db:5432/x?sslmode=require", "postgresql+psycopg://fama:***@db:5432/x?sslmode=require",
     "s/3?c#r"),
    ("redis://:p%40ss@cache/0", "redis://:***@cache/0", "p%40ss"),
    ("redis://cache:6379/0", "redis://cache:6379/0", None),
    ("sqlite:///./var/referrals.db", "sqlite:///./var/referrals.db", None),
])
def test_urls_lose_their_password(url, shown, password):
    assert mask_url(url) == shown
    if password:
        assert password not in mask_url(url)


def test_fama_config_masks_every_secret(monkeypatch):
    from services.directory.config import get_settings as directory_settings
    from services.notifications.config import get_settings as notifications_settings
    from services.referrals.config import get_settings as referrals_settings

    values = {
        "REDIS_URL": "redis://:Rds-Pw-81x@cache:6379/0",
        "DIRECTORY_DATABASE_URL": "postgresql+psycopg://fama:Db@Pw-27q@db/directory",
        "REFERRALS_DATABASE_URL": "postgresql+psycopg://:Db-Pw-nouser@db/referrals",
        "JWT_SECRET": "Jwt-" + secrets.token_hex(20),
        "JWT_JWKS_URL": "https://idp:Jwks-Pw-55@idp.example/jwks",
        "NOTIFICATIONS_SMTP_PASSWORD": "Smtp-Pw-66z",
        "NOTIFICATIONS_NOTIFY_API_KEY": "Notify-Key-77y",
        "NOTIFICATIONS_CALLBACK_TOKEN": "Cb-" + secrets.token_hex(20),
        "NOTIFICATIONS_HASH_KEY": "Hash-" + secrets.token_hex(20),
        "REFERRALS_ENCRYPTION_KEYS": generate_key(),
        "CONTACT_TRANSIT_KEYS": generate_key(),
    }
    caches = (directory_settings, notifications_settings, referrals_settings)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    for cache in caches:
        cache.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["config"], env={"COLUMNS": "400"})
    finally:
        for cache in caches:
            cache.cache_clear()
    assert result.exit_code == 0, result.output
    secret_parts = ["Rds-Pw-81x", "Db@Pw-27q", "Pw-27q", "Db-Pw-nouser", values["JWT_SECRET"], "Jwks-Pw-55",
                    "Smtp-Pw-66z", "Notify-Key-77y", values["NOTIFICATIONS_CALLBACK_TOKEN"],
                    values["NOTIFICATIONS_HASH_KEY"], values["REFERRALS_ENCRYPTION_KEYS"], values["CONTACT_TRANSIT_KEYS"]]
    leaked = [s for s in secret_parts if s in result.output]
    assert not leaked, f"fama config shows {leaked}"
    assert "redis://:***@cache:6379/0" in result.output and "fama:***@db/directory" in result.output
