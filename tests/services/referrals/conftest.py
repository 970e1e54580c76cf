"""Helpers for the referrals tests: meetings in the local replica, referral inputs, DB counts."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select, text

from services.referrals.handlers import HANDLERS
from services.referrals.models import Referral, ReferralHistory, ReferralReminder
from services.referrals.runtime import runtime
from shared.events import Event, MeetingSnapshot, MeetingWithdrawn, utcnow
from shared.meeting_time import meeting_guide_weekday

MOBILE = "07812 345678"
MOBILE_E164 = "+447812345678"
EMAIL = "eleanor.rigby@example.org"
# Every way the number or address could appear in clear.
PLAINTEXTS = ("7812345678", "07812 345678", "7812 345678", "eleanor.rigby", "Eleanor.Rigby")

TUESDAY_MEETING = {"slug": "croydon-smart-tuesday", "name": "SMART Recovery Croydon", "fellowship": "smart", "day": 2,
                   "time": "14:00", "timezone": "Europe/London", "site_id": "croydon"}


def publish_meeting(**overrides) -> MeetingSnapshot:
    """Put a meeting in the referrals replica the way the worker does: a meeting.published event."""
    snapshot = MeetingSnapshot(**{**TUESDAY_MEETING, **overrides})
    event = Event.new("meeting.published", snapshot, producer="directory")
    assert runtime.handle(event.model_dump(mode="json"), HANDLERS)
    return snapshot


def withdraw_meeting(snapshot: MeetingSnapshot) -> None:
    event = Event.new("meeting.withdrawn", MeetingWithdrawn(slug=snapshot.slug, meeting=snapshot), producer="directory")
    assert runtime.handle(event.model_dump(mode="json"), HANDLERS)


def next_weekday(day: int, *, weeks_ahead: int = 1) -> dt.date:
    """A date on Meeting Guide weekday ``day`` at least a week ahead (never today)."""
    start = utcnow().date() + dt.timedelta(days=7 * weeks_ahead)
    return next(start + dt.timedelta(days=i) for i in range(7) if meeting_guide_weekday(start + dt.timedelta(days=i)) == day)


def referral_body(**overrides) -> dict:
    body = {
        "meeting_slug": TUESDAY_MEETING["slug"], "support": "accompanied_by_peer", "client_reference": "CRY-0042",
        "mobile": MOBILE, "email": EMAIL, "consent": {"to_reminders": True, "wording_version": "2025-01"},
        "reminder_detail": "discreet",
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not ...}


def counts() -> dict[str, int]:
    """Rows in every referrals table that a refused request must leave untouched."""
    with runtime.sessions() as session:
        out = {t.__tablename__: session.scalar(select(func.count()).select_from(t))
               for t in (Referral, ReferralHistory, ReferralReminder)}
        out["outbox"] = session.scalar(select(func.count()).select_from(runtime.outbox_table))
    return out


def raw_rows(table: str) -> list[tuple]:
    """A table read with plain SQL, bypassing the ORM's decryption."""
    with runtime.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(f"SELECT * FROM {table}"))]


@pytest.fixture
def meeting(clean_state) -> MeetingSnapshot:
    return publish_meeting()
