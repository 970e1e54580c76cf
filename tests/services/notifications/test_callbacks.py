"""GOV.UK Notify callbacks: bearer-checked, delivery receipts applied once, STOP stops everything."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text, update

from services.notifications import sending, service
from services.notifications.api import app
from services.notifications.models import OptOut, ReferralContact, Reminder
from services.notifications.runtime import runtime
from shared.events import utcnow
from tests.services.notifications.support import (  # noqa: F401 (any_hour: a fixture)
    any_hour,
    by_kind,
    dev_messages,
    handle,
    make_due,
    meeting,
    meeting_event,
    outbox_events,
    referral_event,
    reminder,
    reminders,
)

pytestmark = pytest.mark.usefixtures("clean_state", "any_hour")
client = TestClient(app)
NOTIFY = {"Authorization": f"Bearer {runtime.settings.callback_token}"}


def inbound(message: str, number: str = "447700900123", message_id: str | None = None, **headers):
    body = {"id": message_id or str(uuid.uuid4()), "source_number": number,
            "destination_number": "07700900000", "message": message, "date_received": "2026-11-21T10:00:00.000000Z"}
    return client.post("/callbacks/inbound-sms", json=body, headers=headers or NOTIFY)


def receipt(reference: str, status: str, **headers):
    body = {"id": "740e5834-3a29-46b4-9a6f-16142fde533a", "reference": reference, "to": "07700900123",
            "status": status, "created_at": "2026-11-21T10:00:00.000000Z", "completed_at": "2026-11-21T10:00:05.000000Z",
            "sent_at": "2026-11-21T10:00:01.000000Z", "notification_type": "sms"}
    return client.post("/callbacks/delivery", json=body, headers=headers or NOTIFY)


def referral(m, **kw):
    event = referral_event(m, **kw)
    handle(event)
    return event.parsed().referral_id


def sent_reminder():
    m = meeting()
    handle(meeting_event(m))
    rid = referral(m)
    due = by_kind(rid)["day_before"]
    make_due([due.id])
    assert sending.dispatch_due() == 1
    assert sending.send_reminder(reminder_id=due.id) == "sent"
    return due.id


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}])
def test_callbacks_need_the_bearer_token(headers):
    for path in ("/callbacks/delivery", "/callbacks/inbound-sms"):
        response = client.post(path, json={}, headers=headers)
        assert response.status_code == 401, path


def test_bad_callback_bodies_are_named():
    response = client.post("/callbacks/delivery", json={"id": "x"}, headers=NOTIFY)
    assert response.status_code == 422 and "status" in response.json()["detail"]
    response = inbound("STOP", number="not a number")
    assert response.status_code == 422 and "source_number" in response.json()["detail"]


def test_delivery_receipt_is_applied_once_and_never_overwritten():
    rid = sent_reminder()
    assert receipt(str(rid), "delivered").json() == {"outcome": "delivered"}
    assert reminder(rid).status == "delivered"
    assert receipt(str(rid), "delivered").json() == {"outcome": "unchanged"}
    assert receipt(str(rid), "permanent-failure").json() == {"outcome": "unchanged"}
    assert reminder(rid).status == "delivered"
    assert [p["kind"] for p in outbox_events("reminder.delivered")] == ["day_before"]
    assert outbox_events("reminder.failed") == []


def test_failed_delivery_is_published():
    rid = sent_reminder()
    assert receipt(str(rid), "temporary-failure").json() == {"outcome": "temporary-failure"}
    assert reminder(rid).status == "temporary-failure"
    assert [p["reason"] for p in outbox_events("reminder.failed")] == ["provider: temporary-failure"]
    assert receipt(str(rid), "delivered").json() == {"outcome": "unchanged"}


def test_unknown_or_interim_receipts_change_nothing():
    rid = sent_reminder()
    assert receipt(str(rid), "sending").json() == {"outcome": "ignored"}
    assert receipt("5d0e7f4e-0000-4000-8000-000000000000", "delivered").json() == {"outcome": "unknown"}
    assert reminder(rid).status == "sent"


@pytest.mark.parametrize("message", ["STOP", "stop", "Please Stop texting me", "END", "unsubscribe", "Cancel."])
def test_stop_words_opt_out(message):
    assert inbound(message).json() == {"outcome": "opted out"}


@pytest.mark.parametrize("message", ["see you there", "stopped by the hall", "thanks", "HELP", "yes"])
def test_other_texts_from_an_unknown_number_change_nothing(message):
    assert inbound(message).json() == {"outcome": "unknown sender"}
    assert outbox_events("reply.received") == [] and reminders() == []


def test_stop_stops_everything():
    m = meeting()
    other = meeting("other-meeting", time="12:00")
    handle(meeting_event(m))
    handle(meeting_event(other))
    first, second = referral(m), referral(other, mobile="07700 900123")  # the same number, written differently
    bystander = referral(m, mobile="+447700900999")
    queued = by_kind(first)["day_before"]
    make_due([queued.id])
    assert sending.dispatch_due() == 1  # a send task is already on its way

    assert inbound("stop").json() == {"outcome": "opted out"}
    assert {r.status for r in reminders(first) + reminders(second)} == {"cancelled"}
    assert {r.status for r in reminders(bystander)} == {"created"}
    [event] = outbox_events("contact.opted_out")
    assert event["channel"] == "sms"
    assert {r["referral_id"] for r in event["referrals"]} == {str(first), str(second)}
    # Only a keyed hash is kept, never the number.
    with runtime.sessions() as session:
        [opt_out] = session.scalars(select(OptOut)).all()
        assert "7700900123" not in opt_out.contact_hash
        dump = session.execute(text("SELECT contact_hash, channel FROM opt_outs")).all()
        assert "7700900123" not in str(dump)

    # The task already queued finds the row cancelled and sends nothing.
    assert sending.send_reminder(reminder_id=queued.id) == "skipped: cancelled"
    # Even a row somebody put back in the queue is refused at send time.
    with runtime.transaction() as session:
        session.execute(update(Reminder).where(Reminder.id == queued.id).values(status="queued", queued_at=utcnow()))
    assert sending.send_reminder(reminder_id=queued.id) == "cancelled: opted out"
    assert dev_messages() == []

    # No future message is planned to the number; STOP again publishes nothing new.
    later = referral(m)
    assert reminders(later) == []
    assert inbound("STOP").json() == {"outcome": "already opted out"}
    assert len(outbox_events("contact.opted_out")) == 1
    make_due([r.id for r in reminders()])
    dispatched = sending.dispatch_due()
    assert dispatched == 4  # the bystander's three and its confirmation only


def test_stop_erases_the_number_and_keeps_only_its_hash():
    sent = sent_reminder()  # to the default number, recorded by the dev provider
    m = meeting()
    again = referral(m, mobile="07700 900123")  # the same number, written differently
    bystander = referral(m, mobile="+447700900999")
    assert dev_messages(sent)[0].recipient == "+447700900123"

    assert inbound("STOP").json() == {"outcome": "opted out"}
    with runtime.sessions() as session:
        contacts = {c.referral_id: c for c in session.scalars(select(ReferralContact))}
    stopped = [c for rid, c in contacts.items() if rid != bystander]
    assert {rid for rid in contacts} >= {again, bystander} and len(stopped) == 2
    assert [c.contact for c in stopped] == [None, None]
    assert {c.contact_hash for c in stopped} == {service.contact_hash("+447700900123", "sms")}  # what honours STOP
    assert contacts[bystander].contact == "+447700900999"
    # The dev provider's record of what was sent no longer names the number.
    assert [m.recipient for m in dev_messages(sent)] == ["(erased)"]
    with runtime.engine.connect() as conn:
        assert "7700900123" not in str(conn.execute(text("SELECT * FROM referral_contacts")).all())
    # A new referral to the number is still recognised as opted out.
    later = referral(m, mobile="+447700900123")
    assert reminders(later) == []
