"""The lean send path: one claim statement, then the dev message, the sent mark and its event
in one statement (Postgres) or one transaction (SQLite, what `make run` uses); what a stalled
worker does once another took its reminder over. Every test runs on both databases."""

from __future__ import annotations

import datetime as dt
import os

import pytest
from sqlalchemy import select, text, update
from sqlalchemy.exc import IntegrityError

from services.notifications import sending
from services.notifications.config import get_settings
from services.notifications.models import Reminder
from services.notifications.runtime import runtime
from shared.events import utcnow
from tests.services.notifications.support import (  # noqa: F401 (any_hour: a fixture)
    MOBILE,
    any_hour,
    by_kind,
    dev_messages,
    make_due,
    meeting_over,
    outbox_events,
    reminder,
)
from tests.services.notifications.test_sending import planned_in_process, set_queued


@pytest.fixture(autouse=True, params=["postgres", "sqlite"])
def database(request, tmp_path):
    """The service's runtime on the suite's Postgres (emptied) or on a fresh SQLite file."""
    if request.param == "postgres":
        request.getfixturevalue("clean_state")
        yield request.param
        return
    key = "NOTIFICATIONS_DATABASE_URL"
    before = os.environ[key]
    os.environ[key] = f"sqlite:///{tmp_path}/notifications.db"
    get_settings.cache_clear()
    runtime.reset_caches()
    try:
        runtime.migrate()
        assert runtime.engine.dialect.name == "sqlite"
        yield request.param
    finally:
        os.environ[key] = before
        get_settings.cache_clear()
        runtime.reset_caches()


pytestmark = pytest.mark.usefixtures("any_hour")


def due_reminder():
    rid = planned_in_process()
    due = by_kind(rid)["hours_before"]
    make_due([due.id])
    set_queued(due.id)
    return due


def make_stale(reminder_id) -> None:
    with runtime.transaction() as session:
        session.execute(update(Reminder).where(Reminder.id == reminder_id).values(
            sending_at=utcnow() - dt.timedelta(seconds=runtime.settings.sending_stale_seconds + 1)))


def test_a_send_records_the_message_the_sent_mark_and_the_event_together():
    due = due_reminder()
    assert sending.send_reminder(reminder_id=due.id) == "sent"
    sent = reminder(due.id)
    [message] = dev_messages(due.id)
    assert sent.status == "sent" and sent.attempts == 1
    assert sent.provider_ref == f"dev-{due.id}" and message.reference == str(due.id)
    assert [p["reminder_id"] for p in outbox_events("reminder.sent")] == [str(due.id)]
    with runtime.engine.connect() as conn:  # one outbox row per subscriber, one envelope, not yet relayed
        rows = conn.execute(select(runtime.outbox_table).where(runtime.outbox_table.c.event_type == "reminder.sent")).all()
    assert sorted(r.subscriber for r in rows) == ["directory", "referrals"]
    assert len({r.event_id for r in rows}) == 1 and all(str(r.event_id) == r.body["event_id"] for r in rows)
    assert {r.body["type"] for r in rows} == {"reminder.sent"} and {r.body["producer"] for r in rows} == {"notifications"}
    assert all(r.relayed_at is None and r.attempts == 0 for r in rows)
    assert message.recipient == MOBILE
    with runtime.engine.connect() as conn:  # what is on disk: the number only as ciphertext
        stored = conn.execute(text("SELECT recipient FROM dev_messages")).scalar_one()
    assert MOBILE not in stored and MOBILE.lstrip("+") not in stored and stored.startswith("gAAAAA")  # a Fernet token
    assert sending.send_reminder(reminder_id=due.id) == "skipped: sent"  # a duplicate task
    assert len(dev_messages(due.id)) == 1


def test_a_stalled_worker_whose_reminder_was_taken_over_sends_nothing():
    due = due_reminder()
    provider = sending.provider_for("sms", runtime.settings, sending.send_sessions())
    stalled, to, message = sending._prepare(due.id, utcnow())  # worker A claims, then stalls
    make_stale(due.id)
    taker, _, _ = sending._prepare(due.id, utcnow())  # worker B takes the stale row over
    # A wakes up while B still holds the row ("sending" both times: only the attempt tells them apart).
    assert sending._send_and_mark(provider, stalled, to, message) == "skipped: taken over"
    assert dev_messages(due.id) == [] and reminder(due.id).status == "sending"
    assert sending._send_and_mark(provider, taker, to, message) == "sent"
    assert len(dev_messages(due.id)) == 1
    assert reminder(due.id).status == "sent" and reminder(due.id).attempts == 2
    assert len(outbox_events("reminder.sent")) == 1


def test_a_late_failure_does_not_end_a_reminder_another_worker_holds():
    due = due_reminder()
    stalled = sending._claim(due.id, utcnow())  # worker A claims, then stalls
    make_stale(due.id)
    taker = sending._claim(due.id, utcnow())  # worker B takes it over
    sending._fail(stalled, status="permanent-failure", reason="refused")  # A's provider refused, late
    assert reminder(due.id).status == "sending" and reminder(due.id).attempts == taker.attempts == 2
    assert outbox_events("reminder.failed") == []


def test_the_dev_message_and_the_sent_mark_are_written_together_or_not_at_all():
    provider = sending.provider_for("sms", runtime.settings, sending.send_sessions())
    due = due_reminder()
    claimed, to, message = sending._prepare(due.id, utcnow())
    ref, record = provider.send(reference=str(due.id), to=to, message=message)
    with pytest.raises(IntegrityError):  # the message cannot be written (no body): the mark fails with it
        sending._mark_sent(claimed, ref, record=record._replace(row={**record.row, "body": None}))
    assert dev_messages(due.id) == []  # rolled back with it: a later recovery finds nothing and sends
    assert reminder(due.id).status == "sending" and outbox_events("reminder.sent") == []
    make_stale(due.id)
    assert sending.send_reminder(reminder_id=due.id) == "sent"
    assert len(dev_messages(due.id)) == 1


def test_a_claim_that_must_not_send_changes_nothing_once_taken_over():
    due = due_reminder()
    stalled = sending._claim(due.id, utcnow())  # worker A claims
    make_stale(due.id)
    assert sending.send_reminder(reminder_id=due.id) == "sent"  # worker B
    with sending.send_transaction() as session:  # A, late, decides to cancel: the row is no longer its own
        sending._finish(session, stalled, status="cancelled", reason="opted out", event="reminder.cancelled")
    assert reminder(due.id).status == "sent"
    assert outbox_events("reminder.cancelled") == []


def test_the_hourly_cap_counts_messages_sent_to_the_number(monkeypatch):
    monkeypatch.setattr(runtime.settings, "hourly_cap", 1)
    rid = planned_in_process()
    planned = by_kind(rid)
    make_due([planned["day_before"].id, planned["follow_up"].id])
    set_queued(planned["day_before"].id, planned["follow_up"].id)
    assert sending.send_reminder(reminder_id=planned["day_before"].id) == "sent"
    assert sending.send_reminder(reminder_id=planned["follow_up"].id) == "deferred: hourly cap"
    deferred = reminder(planned["follow_up"].id)
    sent_at = reminder(planned["day_before"].id).sent_at
    # Due again one hour after the message that filled the cap, not before.
    assert deferred.status == "created" and deferred.due_at >= sent_at + dt.timedelta(hours=1)
    assert len(dev_messages()) == 1
    with runtime.engine.begin() as conn:  # due again and sent: the event does not repeat the deferral's reason
        conn.execute(update(Reminder).where(Reminder.id == deferred.id).values(
            due_at=sent_at + dt.timedelta(hours=1, seconds=2)))
    runtime.settings.hourly_cap = 2
    meeting_over([deferred.id])  # a follow-up goes once its meeting has ended
    set_queued(deferred.id)
    assert sending.send_reminder(reminder_id=deferred.id) == "sent"
    follow_up_sent = [p for p in outbox_events("reminder.sent") if p["kind"] == "follow_up"]
    assert [p["reason"] for p in follow_up_sent] == [None] and reminder(deferred.id).reason is None
