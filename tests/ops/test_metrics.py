"""The business figures on /metrics move when the state moves, with real workers and schedulers.

Each figure is read from the API's /metrics as Prometheus would read it, while the processes
that change the state (relay sweeps, workers, the dispatcher, the sender) are started and
stopped as ops would see them fail and come back.
"""

from __future__ import annotations

import datetime as dt

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from services.directory.runtime import runtime as directory
from services.notifications.api import app as notifications_app
from services.notifications.metrics import failure_reason
from services.notifications.models import Reminder
from services.notifications.runtime import runtime as notifications
from shared import queues
from shared.celery_app import make_celery
from shared.db import make_sessionmaker, transaction
from shared.events import Event, MeetingSnapshot, utcnow
from shared.settings import ServiceSettings
from tests.ops.support import scrape, value
from tests.services.notifications.support import (  # noqa: F401 (any_hour: a fixture)
    any_hour,
    by_kind,
    handle,
    meeting,
    meeting_event,
    referral_event,
)
from tests.support.events import signed
from tests.support.processes import wait_for

pytestmark = pytest.mark.usefixtures("clean_state")

# Waits sized for a busy 2-core machine: each returns as soon as the figure has moved.
MOVE = 90
MEETING = MeetingSnapshot(slug="kendal-na-monday", name="NA Kendal", fellowship="na", day=1, time="19:00",
                          timezone="Europe/London", site_id="kendal")
NOTIFY = {"Authorization": f"Bearer {notifications.settings.callback_token}"}


def published(slug: str, *, ago: dt.timedelta = dt.timedelta(0)) -> Event:
    return Event.new("meeting.published", MEETING.model_copy(update={"slug": slug}), producer="directory",
                     occurred_at=utcnow() - ago)


def test_outbox_backlog_rises_while_no_relay_runs_and_falls_when_the_sweep_comes_back(processes):
    # Three meetings committed while nothing relays them (a session without the relay, as the sender's).
    no_relay = make_sessionmaker(directory.engine)
    with transaction(no_relay) as session:
        for n in range(3):
            directory.outbox.record(session, "meeting.published", MEETING.model_copy(update={"slug": f"m-{n}"}))
    wait_for(lambda: value("directory", "fama_outbox_oldest_unrelayed_age_seconds") >= 1, timeout=MOVE,
             what="the oldest unrelayed row to age")
    shown = scrape("directory")
    assert shown["fama_outbox_unrelayed", frozenset({("subscriber", "referrals")})] == 3
    assert shown["fama_outbox_unrelayed", frozenset({("subscriber", "notifications")})] == 3
    assert shown["fama_outbox_unconfirmed", frozenset({("subscriber", "referrals")})] == 0

    # The directory's scheduler comes back: its sweep relays them to the subscribers' queues...
    processes.scheduler("directory")
    wait_for(lambda: value("directory", "fama_outbox_unrelayed", subscriber="referrals") == 0, timeout=MOVE,
             what="the sweep to relay the backlog")
    assert value("directory", "fama_outbox_oldest_unrelayed_age_seconds") == 0
    # ...where they wait, sent but unconfirmed, as no referrals worker runs.
    assert value("directory", "fama_outbox_unconfirmed", subscriber="referrals") == 3
    assert value("referrals", "fama_queue_length", queue=queues.REFERRALS_EVENTS) >= 1
    before = value("referrals", "fama_inbox_lag_seconds_count", consumer="referrals")

    # A referrals worker takes them: the queue empties, each event's lag is observed, and the
    # directory's confirm step sees the receipts.
    processes.worker("referrals")
    wait_for(lambda: value("referrals", "fama_queue_length", queue=queues.REFERRALS_EVENTS) == 0, timeout=MOVE,
             what="the referrals queue to empty")
    wait_for(lambda: value("referrals", "fama_inbox_lag_seconds_count", consumer="referrals") == before + 3,
             timeout=MOVE, what="three events in the referrals inbox lag histogram")
    wait_for(lambda: value("directory", "fama_outbox_unconfirmed", subscriber="referrals") == 0, timeout=MOVE,
             what="the directory to see the referrals' receipts")
    assert value("directory", "fama_outbox_oldest_unconfirmed_age_seconds") > 0  # notifications never confirmed


def test_queue_length_rises_with_waiting_messages_and_a_forged_event_is_counted_once_refused(processes):
    sender = make_celery("test-sender", ServiceSettings())
    genuine = [signed(published(f"late-{n}", ago=dt.timedelta(minutes=10))) for n in range(4)]
    forged = published("forged").model_dump(mode="json")  # not signed: anyone with Redis access could push it
    for n, body in enumerate([*genuine, forged]):  # one with a priority: kombu keeps it in a list of its own
        sender.send_task(queues.event_task("notifications"), args=[body], queue=queues.NOTIFICATIONS_EVENTS,
                         priority=9 if n == 0 else None)

    assert value("notifications", "fama_queue_length", queue=queues.NOTIFICATIONS_EVENTS) == 5
    assert value("notifications", "fama_events_refused_total", consumer="notifications", reason="bad_signature") == 0

    processes.worker("notifications")
    wait_for(lambda: value("notifications", "fama_events_refused_total", consumer="notifications",
                           reason="bad_signature") == 1, timeout=MOVE, what="the forged event counted as refused")
    wait_for(lambda: value("notifications", "fama_inbox_lag_seconds_count", consumer="notifications") == 4,
             timeout=MOVE, what="the four genuine events processed")
    shown = scrape("notifications")
    assert shown["fama_queue_length", frozenset({("queue", queues.NOTIFICATIONS_EVENTS)})] == 0
    # Lag is measured from when the event occurred (ten minutes ago), not from when it was queued.
    lag = {le: shown["fama_inbox_lag_seconds_bucket", frozenset({("consumer", "notifications"), ("le", le)})]
           for le in ("300.0", "900.0", "+Inf")}
    assert lag == {"300.0": 0, "900.0": 4, "+Inf": 4}
    assert 4 * 600 <= shown["fama_inbox_lag_seconds_sum", frozenset({("consumer", "notifications")})] < 4 * 900


@pytest.mark.usefixtures("any_hour")
def test_reminders_overdue_sent_and_their_events_relayed_as_the_dispatcher_and_sender_stop_and_start(processes):
    m = meeting("croydon-smart-metrics")
    handle(meeting_event(m))
    day_before = []
    for mobile in ("+447700900201", "+447700900202"):
        event = referral_event(m, mobile=mobile)
        handle(event)
        day_before.append(by_kind(event.parsed().referral_id)["day_before"].id)
    with notifications.transaction() as session:  # due ten minutes ago; the dispatcher and sender are down
        session.execute(update(Reminder).where(Reminder.id.in_(day_before))
                        .values(due_at=utcnow() - dt.timedelta(minutes=10)))
    shown = scrape("notifications")
    assert shown["fama_reminders_overdue", frozenset({("status", "created")})] == 2
    assert shown["fama_reminders_overdue_oldest_age_seconds", frozenset()] >= 600
    fast = {"NOTIFICATIONS_DISPATCH_SECONDS": "0.3"}

    # The dispatcher runs, the sender does not: the reminders wait on the send queue.
    scheduler = processes.scheduler("notifications", env=fast)
    wait_for(lambda: value("notifications", "fama_reminders_overdue", status="queued") == 2, timeout=MOVE,
             what="the reminders dispatched")
    assert value("notifications", "fama_queue_length", queue=queues.NOTIFICATIONS_SEND) >= 1
    assert value("notifications", "fama_reminders_overdue", status="created") == 0

    # The scheduler (dispatcher and outbox sweep) stops; the sender starts: the reminders go, and
    # their reminder.sent events wait in the outbox, as only the sweep relays the send path's events.
    scheduler.stop()
    processes.worker("notifications", [queues.NOTIFICATIONS_SEND], env=fast)
    wait_for(lambda: value("notifications", "fama_reminders", status="sent") == 2, timeout=MOVE,
             what="the reminders sent")
    shown = scrape("notifications")
    assert shown["fama_reminders_overdue_oldest_age_seconds", frozenset()] == 0
    assert shown["fama_queue_length", frozenset({("queue", queues.NOTIFICATIONS_SEND)})] == 0
    assert shown["fama_outbox_unrelayed", frozenset({("subscriber", "directory")})] == 2  # reminder.sent
    assert shown["fama_outbox_unrelayed", frozenset({("subscriber", "referrals")})] == 2

    processes.scheduler("notifications", env=fast)
    wait_for(lambda: value("notifications", "fama_outbox_unrelayed", subscriber="directory") == 0
             and value("notifications", "fama_outbox_unrelayed", subscriber="referrals") == 0, timeout=MOVE,
             what="the sweep to relay reminder.sent")

    # Provider callbacks: a failure with its reason, a receipt for nothing we sent, a STOP, a bad token.
    client = TestClient(notifications_app)

    def receipt(reference: str, status: str, headers=NOTIFY):
        return client.post("/callbacks/delivery", headers=headers, json={
            "id": "740e5834-3a29-46b4-9a6f-16142fde533a", "reference": reference, "to": "07700900201",
            "status": status, "created_at": "2026-11-21T10:00:00.000000Z", "completed_at": "2026-11-21T10:00:05.000000Z",
            "sent_at": "2026-11-21T10:00:01.000000Z", "notification_type": "sms"})

    before = scrape("notifications")

    def moved(name: str, **labels) -> float:
        key = (name, frozenset(labels.items()))
        return scrape("notifications").get(key, 0) - before.get(key, 0)

    assert receipt(str(day_before[0]), "permanent-failure").json()["outcome"] == "permanent-failure"
    assert receipt("7b0e0a4e-2f43-4d47-9a52-3c7d4f1e9a10", "delivered").json()["outcome"] == "unknown"
    assert receipt(str(day_before[1]), "delivered", headers={"Authorization": "Bearer wrong"}).status_code == 401
    stop = client.post("/callbacks/inbound-sms", headers=NOTIFY, json={
        "id": "8c5b7dfe-7d32-4bd3-9b1f-6e1a3c1e0f7a", "source_number": "447700900202",
        "destination_number": "07700900000", "message": "STOP", "date_received": "2026-11-21T10:00:00.000000Z"})
    assert stop.json()["outcome"] == "opted out"
    wait_for(lambda: moved("fama_opt_outs_total", channel="sms") == 1, timeout=10, what="the opt-out counted")
    assert moved("fama_reminder_failures_total", status="permanent-failure", reason="provider: permanent-failure") == 1
    assert moved("fama_reminders", status="sent") == -1
    assert moved("fama_callbacks_total", callback="delivery", outcome="permanent-failure") == 1
    assert moved("fama_callbacks_total", callback="delivery", outcome="unknown") == 1
    assert moved("fama_callbacks_total", callback="any", outcome="unauthorized") == 1
    assert moved("fama_callbacks_total", callback="inbound_sms", outcome="opted out") == 1


def test_failure_reasons_become_bounded_labels_without_the_providers_text():
    assert failure_reason("provider: permanent-failure") == "provider: permanent-failure"
    assert failure_reason("GOV.UK Notify 400: ValidationError phone_number Not a UK mobile number") == "GOV.UK Notify 400"
    assert failure_reason("gave up after 5 attempts: SMTP unavailable: TimeoutError") == "gave up after 5 attempts"
    assert failure_reason("too late: the meeting had started (provider: GOV.UK Notify 503)") == "too late"
    assert failure_reason("meeting unknown") == "meeting unknown"
    assert failure_reason(None) == "none"
