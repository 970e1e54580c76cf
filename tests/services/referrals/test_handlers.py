"""Events from notifications: opt-outs, reminder facts and unreachable contacts, applied once
in effect whatever the order or the number of deliveries."""

from __future__ import annotations

import datetime as dt
import itertools
import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from services.referrals.api import app
from services.referrals.handlers import HANDLERS
from services.referrals.models import Referral, ReferralHistory, ReferralReminder
from services.referrals.runtime import runtime
from shared.events import ContactOptedOut, Event, OptedOutReferral, ReminderFact, utcnow
from tests.services.referrals.conftest import counts, referral_body
from tests.support.auth import auth

KEYWORKER = auth("keyworker", "croydon")


@pytest.fixture
def referral(meeting) -> dict:
    response = TestClient(app).post("/referrals", json=referral_body(), headers=KEYWORKER)
    assert response.status_code == 201
    return response.json()


def deliver(event: Event) -> bool:
    return runtime.handle(event.model_dump(mode="json"), HANDLERS)


def reminder_event(kind_of: str, referral_id, *, reminder_id=None, at: dt.datetime | None = None, **fields) -> Event:
    fact = ReminderFact(reminder_id=reminder_id or uuid.uuid4(), referral_id=referral_id, site_id="croydon",
                        fellowship="smart", kind=fields.pop("kind", "day_before"), channel=fields.pop("channel", "sms"),
                        **fields)
    return Event.new(f"reminder.{kind_of}", fact, producer="notifications", occurred_at=at)


def detail(referral_id) -> dict:
    return TestClient(app).get(f"/referrals/{referral_id}", headers=KEYWORKER).json()


def opt_out(referral_id) -> Event:
    payload = ContactOptedOut(channel="sms", contact_hash="ab" * 32, referrals=[
        OptedOutReferral(referral_id=referral_id, site_id="croydon", fellowship="smart"),
        OptedOutReferral(referral_id=uuid.uuid4(), site_id="croydon", fellowship="smart"),  # not ours / gone
    ])
    return Event.new("contact.opted_out", payload, producer="notifications")


def test_opt_out_withdraws_consent_once_and_keeps_the_referral(referral):
    event = opt_out(referral["id"])
    outbox_before = counts()["outbox"]
    assert deliver(event) is True
    body = detail(referral["id"])
    assert body["consent"]["withdrawn_by"] == "client:opted-out-sms"
    assert body["contact"]["mobile"] is None and body["contact"]["erased_at"]
    assert body["status"] == "requested"
    # No event of ours: notifications already told every subscriber about the opt-out.
    assert counts()["outbox"] == outbox_before
    after_first = counts()
    assert deliver(event) is False  # the same event again
    assert deliver(opt_out(referral["id"])) is True  # a second opt-out for the same referral
    assert counts() == after_first
    assert [h["action"] for h in detail(referral["id"])["history"]] == ["created", "consent_withdrawn"]


def test_opt_out_for_a_referral_without_consent_changes_nothing(meeting):
    created = TestClient(app).post("/referrals", json=referral_body(mobile=..., email=..., consent=...),
                                   headers=KEYWORKER).json()
    before = counts()
    assert deliver(opt_out(created["id"])) is True
    assert counts() == before
    assert detail(created["id"])["consent"]["withdrawn_at"] is None


def test_reminder_lifecycle_is_shown_on_the_referral(referral):
    rid = uuid.uuid4()
    due = utcnow() + dt.timedelta(days=2)
    t0 = utcnow()
    deliver(reminder_event("scheduled", referral["id"], reminder_id=rid, due_at=due, at=t0))
    cancelled_id = uuid.uuid4()
    deliver(reminder_event("scheduled", referral["id"], reminder_id=cancelled_id, kind="follow_up", channel="email",
                           due_at=due + dt.timedelta(days=3), at=t0))
    deliver(reminder_event("cancelled", referral["id"], reminder_id=cancelled_id, kind="follow_up", channel="email",
                           reason="meeting withdrawn", at=t0 + dt.timedelta(seconds=1)))
    deliver(reminder_event("sent", referral["id"], reminder_id=rid, at=t0 + dt.timedelta(seconds=2)))
    deliver(reminder_event("delivered", referral["id"], reminder_id=rid, at=t0 + dt.timedelta(seconds=3)))
    reminders = {r["reminder_id"]: r for r in detail(referral["id"])["reminders"]}
    assert reminders[str(rid)]["status"] == "delivered"
    assert dt.datetime.fromisoformat(reminders[str(rid)]["due_at"]) == due
    assert (reminders[str(rid)]["kind"], reminders[str(rid)]["channel"]) == ("day_before", "sms")
    assert reminders[str(cancelled_id)]["status"] == "cancelled"
    assert reminders[str(cancelled_id)]["reason"] == "meeting withdrawn"


ORDERED = ("scheduled", "sent", "delivered")


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))), ids=str)
def test_reminder_events_in_any_order_end_as_delivered(referral, order):
    rid = uuid.uuid4()
    t0 = utcnow()
    due = t0 + dt.timedelta(hours=20)
    events = [reminder_event(name, referral["id"], reminder_id=rid, at=t0 + dt.timedelta(seconds=i),
                             due_at=due if name == "scheduled" else None) for i, name in enumerate(ORDERED)]
    for i in order:
        assert deliver(events[i]) is True
    for event in events:  # every one redelivered
        assert deliver(event) is False
    with runtime.sessions() as session:
        rows = session.scalars(select(ReferralReminder)).all()
    assert len(rows) == 1
    assert rows[0].status == "delivered"
    assert rows[0].due_at == due


def test_a_stale_reminder_event_changes_nothing_of_the_row(referral):
    rid = uuid.uuid4()
    t0 = utcnow()
    assert deliver(reminder_event("delivered", referral["id"], reminder_id=rid, at=t0)) is True
    with runtime.sessions() as session:
        before = session.get(ReferralReminder, rid)
        before = (before.status, before.status_event_at, before.due_at, before.updated_at)
    # An older "sent" arrives late: new to the inbox, but it must not touch the row.
    assert deliver(reminder_event("sent", referral["id"], reminder_id=rid, at=t0 - dt.timedelta(minutes=1))) is True
    with runtime.sessions() as session:
        after = session.get(ReferralReminder, rid)
        assert (after.status, after.status_event_at, after.due_at, after.updated_at) == before


def test_failed_reminder_flags_the_contact_unreachable_once(referral):
    rid = uuid.uuid4()
    t0 = utcnow()
    failed = reminder_event("failed", referral["id"], reminder_id=rid, reason="permanent-failure", at=t0)
    assert deliver(failed) is True
    assert deliver(failed) is False
    # A sent event that arrives late does not undo the failure.
    assert deliver(reminder_event("sent", referral["id"], reminder_id=rid, at=t0 - dt.timedelta(seconds=5))) is True
    body = detail(referral["id"])
    assert body["contact"]["unreachable"] is True
    assert body["reminders"][0]["status"] == "failed"
    assert [h["action"] for h in body["history"]] == ["created", "contact_unreachable"]
    assert body["history"][-1]["reason"] == "sms: permanent-failure"
    # A later reminder delivered: reachable again.
    assert deliver(reminder_event("delivered", referral["id"], at=t0 + dt.timedelta(minutes=5))) is True
    assert detail(referral["id"])["contact"]["unreachable"] is False


def test_failure_older_than_a_delivery_does_not_flag(referral):
    t0 = utcnow()
    deliver(reminder_event("delivered", referral["id"], at=t0))
    deliver(reminder_event("failed", referral["id"], reason="temporary-failure", at=t0 - dt.timedelta(hours=1)))
    assert detail(referral["id"])["contact"]["unreachable"] is False
    with runtime.sessions() as session:
        assert session.scalar(select(func.count()).select_from(ReferralHistory)
                              .where(ReferralHistory.action == "contact_unreachable")) == 0
        assert session.get(Referral, uuid.UUID(referral["id"])).contact_unreachable_at is None


def test_held_then_too_late_reminder_is_shown_and_does_not_flag_the_contact(referral):
    rid, t0 = uuid.uuid4(), utcnow()
    morning = t0 + dt.timedelta(hours=5)
    deliver(reminder_event("scheduled", referral["id"], reminder_id=rid, due_at=t0, at=t0))
    deliver(reminder_event("scheduled", referral["id"], reminder_id=rid, due_at=morning, reason="held: quiet hours",
                           at=t0 + dt.timedelta(seconds=1)))
    [shown] = detail(referral["id"])["reminders"]
    assert (shown["status"], shown["reason"]) == ("held", "held: quiet hours")
    assert dt.datetime.fromisoformat(shown["due_at"]) == morning
    deliver(reminder_event("failed", referral["id"], reminder_id=rid, reason="too late: the meeting had started",
                           at=t0 + dt.timedelta(seconds=2)))
    body = detail(referral["id"])
    assert (body["reminders"][0]["status"], body["reminders"][0]["reason"]) == (
        "too-late", "too late: the meeting had started")
    assert body["contact"]["unreachable"] is False  # the client was not unreachable: we were late
    page = TestClient(app).get(f"/desk/referrals/{referral['id']}", headers=KEYWORKER)
    assert "Not sent: too late" in page.text
