"""Helpers for the notifications tests: meetings, referral events, due reminders."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from sqlalchemy import select, update

from services.notifications.handlers import HANDLERS
from services.notifications.models import DevMessage, Reminder
from services.notifications.runtime import runtime
from shared.crypto import FieldCipher
from shared.events import ContactDetails, Event, MeetingSnapshot, MeetingWithdrawn, ReferralCreated, utcnow
from shared.meeting_time import meeting_guide_weekday, next_occurrence

MOBILE = "+447700900123"
# Quiet hours from 00:00 to 00:00: none. For tests about something other than the clock, which
# must pass at any hour (the send-time check holds a reminder claimed in quiet hours).
ANY_HOUR = {"NOTIFICATIONS_QUIET_START": "00:00", "NOTIFICATIONS_QUIET_END": "00:00"}


@pytest.fixture
def any_hour(monkeypatch):
    """No quiet hours, in this process and in the workers the test starts."""
    for name, value in ANY_HOUR.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(runtime.settings, "quiet_start", "00:00")
    monkeypatch.setattr(runtime.settings, "quiet_end", "00:00")


def meeting(slug: str = "croydon-tuesday", *, day: int | None = None, time: str = "19:30", **kw) -> MeetingSnapshot:
    """A weekly meeting about a week ahead (so every reminder is in the future)."""
    if day is None:
        day = meeting_guide_weekday((utcnow() + dt.timedelta(days=6)).date())
    values = {"slug": slug, "name": "SMART Recovery Croydon", "fellowship": "smart", "day": day, "time": time,
              "timezone": "Europe/London", "attendance_option": "in_person", "location": "Community Recovery Hub",
              "formatted_address": "12 High Street, Croydon CR0 1AA", "postcode": "CR0 1AA", "site_id": "croydon"}
    values.update(kw)
    return MeetingSnapshot(**values)


def planned_date(m: MeetingSnapshot) -> dt.date:
    return next_occurrence(m.day, m.time, m.timezone, utcnow() + dt.timedelta(days=3)).date()


def meeting_event(m: MeetingSnapshot, event_type: str = "meeting.published", *, at: dt.datetime | None = None) -> Event:
    payload = MeetingWithdrawn(slug=m.slug, meeting=m) if event_type == "meeting.withdrawn" else m
    return Event.new(event_type, payload, producer="directory", occurred_at=at)


def referral_event(m: MeetingSnapshot, *, mobile: str | None = MOBILE, email: str | None = None,
                   detail: str = "discreet", consent: bool = True, referral_id: uuid.UUID | None = None,
                   on: dt.date | None = None) -> Event:
    sealed = None
    if consent and (mobile or email):
        sealed = ContactDetails(mobile=mobile, email=email).seal(FieldCipher(runtime.settings.contact_transit_keys))
    payload = ReferralCreated(referral_id=referral_id or uuid.uuid4(), site_id="croydon", meeting_slug=m.slug,
                              fellowship=m.fellowship, planned_date=on or planned_date(m), support="peer",
                              status="requested", business_status="information-given", consent_to_reminders=consent,
                              reminder_detail=detail, contact_ciphertext=sealed)
    return Event.new("referral.created", payload, producer="referrals")


def handle(event: Event) -> bool:
    """Process an event in this process, exactly as the worker's task does."""
    return runtime.handle(event.model_dump(mode="json"), HANDLERS)


def reminders(referral_id: uuid.UUID | None = None) -> list[Reminder]:
    with runtime.sessions() as session:
        query = select(Reminder).order_by(Reminder.due_at)
        if referral_id is not None:
            query = query.where(Reminder.referral_id == referral_id)
        return list(session.scalars(query))


def by_kind(referral_id: uuid.UUID) -> dict[str, Reminder]:
    return {r.kind: r for r in reminders(referral_id) if r.status != "cancelled"}


def make_due(ids) -> None:
    with runtime.transaction() as session:
        session.execute(update(Reminder).where(Reminder.id.in_(list(ids)))
                        .values(due_at=utcnow() - dt.timedelta(seconds=1)))


def meeting_over(ids) -> None:
    """These reminders' meeting has happened: moved into the past, as the chaos suite's time machine does."""
    with runtime.transaction() as session:
        session.execute(update(Reminder).where(Reminder.id.in_(list(ids))).values(
            meeting_start=utcnow() - dt.timedelta(hours=3), meeting_end=utcnow() - dt.timedelta(hours=2)))


def reminder(reminder_id: uuid.UUID) -> Reminder:
    with runtime.sessions() as session:
        return session.get(Reminder, reminder_id)


def dev_messages(reference: uuid.UUID | None = None) -> list[DevMessage]:
    with runtime.sessions() as session:
        query = select(DevMessage).order_by(DevMessage.id)
        if reference is not None:
            query = query.where(DevMessage.reference == str(reference))
        return list(session.scalars(query))


def outbox_events(event_type: str) -> list[dict]:
    """Payloads of the events notifications published (one per event, not per subscriber)."""
    t = runtime.outbox_table
    with runtime.sessions() as session:
        rows = session.execute(select(t.c.event_id, t.c.body).where(t.c.event_type == event_type).order_by(t.c.id)).all()
    seen = {}
    for event_id, body in rows:
        seen.setdefault(event_id, body["payload"])
    return list(seen.values())
