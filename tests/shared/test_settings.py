"""Production refuses to start with the development secrets; services read their own prefix."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.notifications.config import Settings as NotificationsSettings
from services.referrals.config import Settings as ReferralsSettings
from shared.crypto import generate_key

# Production's own event signing keys (the development ones are refused: test_outbox_inbox).
EVENT_KEYS = {f"{name}_event_keys": f"{name}-event-key-for-production-000000000" for name in
              ("directory", "referrals", "notifications")}


def test_production_refuses_development_keys():
    with pytest.raises(ValidationError, match="JWT_JWKS_URL or a JWT_SECRET"):
        ReferralsSettings(environment="production", encryption_keys=generate_key())
    with pytest.raises(ValidationError, match="encryption keys"):
        ReferralsSettings(environment="production", jwt_secret="x" * 40)
    ok = ReferralsSettings(environment="production", jwt_secret="x" * 40, encryption_keys=generate_key(), **EVENT_KEYS)
    assert ok.environment == "production"


def test_production_notifications_needs_its_own_callback_token_and_hash_key():
    base = {"environment": "production", "jwt_secret": "x" * 40, "encryption_keys": generate_key()}
    with pytest.raises(ValidationError, match="CALLBACK_TOKEN"):
        NotificationsSettings(**base, hash_key="h" * 32)
    with pytest.raises(ValidationError, match="HASH_KEY"):
        NotificationsSettings(**base, callback_token="t" * 32)
    assert NotificationsSettings(**base, callback_token="t" * 32, hash_key="h" * 32,
                                 **EVENT_KEYS).callback_token == "t" * 32


def test_each_service_reads_its_own_prefixed_settings(monkeypatch):
    monkeypatch.setenv("REFERRALS_RETENTION_DAYS", "45")
    monkeypatch.setenv("NOTIFICATIONS_QUIET_START", "22:00")
    monkeypatch.setenv("REDIS_URL", "redis://example.invalid:6379/3")
    assert ReferralsSettings().retention_days == 45
    assert NotificationsSettings().quiet_start == "22:00"
    assert ReferralsSettings().redis_url == NotificationsSettings().redis_url == "redis://example.invalid:6379/3"
