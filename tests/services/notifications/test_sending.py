"""Sending through real Celery workers over real Redis and Postgres: once, and only once."""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert, select, update

from services.notifications import sending
from services.notifications.api import app
from services.notifications.models import Reminder
from services.notifications.runtime import runtime
from shared import queues
from shared.events import Event, refusal, utcnow
from shared.masking import mask_mobile
from tests.services.notifications.notify_server import API_KEY, NotifyServer
from tests.services.notifications.support import (  # noqa: F401 (any_hour: a fixture)
    MOBILE,
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
)
from tests.support.auth import auth
from tests.support.broker import queued_messages
from tests.support.events import signed
from tests.support.processes import wait_for

pytestmark = pytest.mark.usefixtures("clean_state", "any_hour")
FAST = {"NOTIFICATIONS_DISPATCH_SECONDS": "0.3", "NOTIFICATIONS_SWEEP_SECONDS": "1"}


def publish(event: Event) -> None:
    runtime.celery.send_task(queues.event_task("notifications"), args=[signed(event)],
                             queue=queues.NOTIFICATIONS_EVENTS)


def planned_in_process(**kw):
    m = meeting()
    handle(meeting_event(m))
    event = referral_event(m, **kw)
    handle(event)
    return event.parsed().referral_id


def set_queued(*ids) -> None:
    with runtime.transaction() as session:
        session.execute(update(Reminder).where(Reminder.id.in_(ids)).values(status="queued", queued_at=utcnow()))


def status_of(reminder_id) -> str:
    return reminder(reminder_id).status


def test_referral_to_text_message_through_real_workers(processes, redis_client, redis_prefix):
    processes.worker("notifications", [queues.NOTIFICATIONS_EVENTS, queues.NOTIFICATIONS_SEND])
    processes.scheduler("notifications", env=FAST)
    m = meeting()
    publish(meeting_event(m))
    created = referral_event(m)
    publish(created)
    rid = created.parsed().referral_id
    planned = wait_for(lambda: len(by_kind(rid)) == 4 and by_kind(rid), what="three reminders and the confirmation")

    hours_before = planned["hours_before"]
    make_due([hours_before.id])
    wait_for(lambda: status_of(hours_before.id) == "sent", what="the due reminder sent")
    [msg] = dev_messages(hours_before.id)
    assert msg.recipient == MOBILE and msg.channel == "sms"
    assert msg.body.startswith("Reminder: your meeting starts") and msg.body.endswith("Reply STOP to stop these messages")
    assert {r.status for r in by_kind(rid).values()} == {"sent", "created"}  # the others wait for their time
    wait_for(lambda: [p["kind"] for p in outbox_events("reminder.sent")] == ["hours_before"], what="reminder.sent")
    # The send path writes those rows in its own statement: signed all the same, so consumers accept them.
    t = runtime.outbox_table
    with runtime.sessions() as session:
        rows = session.execute(select(t.c.subscriber, t.c.body).where(t.c.event_type == "reminder.sent")).all()
    assert sorted(r.subscriber for r in rows) == ["directory", "referrals"]
    for row in rows:
        assert refusal(row.body, consumer=row.subscriber, keys_of=runtime.settings.event_keys()) is None

    # GET /outbox shows exactly that message to an admin (the number masked), and to nobody else.
    client = TestClient(app)
    shown = client.get("/outbox", headers=auth("admin")).json()
    assert [(o["recipient"], o["body"]) for o in shown] == [(mask_mobile(MOBILE), msg.body)]
    assert MOBILE[-6:] not in str(shown), "an admin never sees the whole number"
    assert client.get("/outbox", headers=auth("keyworker", "croydon")).status_code == 403
    assert client.get(f"/referrals/{rid}/reminders", headers=auth("keyworker", "croydon")).status_code == 200
    assert client.get(f"/referrals/{rid}/reminders", headers=auth("keyworker", "sheffield")).status_code == 403

    # A send task duplicated three times (one chunk naming it twice), and a late duplicate of a
    # sent one, send once.
    day_before = planned["day_before"]
    set_queued(day_before.id)
    for ids in ([day_before.id], [day_before.id], [day_before.id, day_before.id], [hours_before.id]):
        sending.publish_sends(ids)
    wait_for(lambda: status_of(day_before.id) == "sent", what="the duplicated reminder sent")
    wait_for(lambda: redis_client.llen(f"{redis_prefix}{queues.NOTIFICATIONS_SEND}") == 0
             and redis_client.hlen(f"{redis_prefix}unacked") == 0, what="every duplicate task done")
    assert len(dev_messages(day_before.id)) == 1
    assert len(dev_messages(hours_before.id)) == 1
    assert len(dev_messages()) == 2


@pytest.mark.chaos
def test_worker_killed_during_a_send_then_restarted_sends_exactly_once(processes, redis_client, redis_prefix):
    slow = {"NOTIFICATIONS_DEV_SEND_DELAY_SECONDS": "2", "NOTIFICATIONS_SENDING_STALE_SECONDS": "4", **FAST}
    rid = planned_in_process()
    due = by_kind(rid)["hours_before"]
    make_due([due.id])
    worker = processes.worker("notifications", [queues.NOTIFICATIONS_SEND], env=slow)
    processes.scheduler("notifications", env=slow)
    wait_for(lambda: status_of(due.id) == "sending", interval=0.05, what="the send to start")
    time.sleep(0.5)
    worker.kill()  # kill -9 of the worker and its pool, mid-send
    killed_at = time.monotonic()
    assert status_of(due.id) == "sending"
    assert dev_messages(due.id) == []
    assert redis_client.hlen(f"{redis_prefix}unacked") == 1  # the killed worker's task, never acknowledged
    processes.worker("notifications", [queues.NOTIFICATIONS_SEND], env=slow)
    wait_for(lambda: status_of(due.id) == "sent", timeout=40, what="the send to be recovered")
    # The killed worker's own message comes back once the visibility timeout (15 s) passed:
    # the live worker restores it within a few seconds (shared/celery_app.py); nudge it now.
    time.sleep(max(0.0, killed_at + 16 - time.monotonic()))
    with runtime.celery.connection_for_write() as conn:
        conn.default_channel.qos.restore_visible(num=100, interval=1)
    wait_for(lambda: redis_client.hlen(f"{redis_prefix}unacked") == 0
             and redis_client.llen(f"{redis_prefix}{queues.NOTIFICATIONS_SEND}") == 0, timeout=20,
             what="every redelivered task done")
    assert len(dev_messages(due.id)) == 1
    assert reminder(due.id).attempts >= 2


def test_worker_killed_after_the_provider_took_the_message_does_not_send_again():
    """The provider has it but the row still says "sending": recovery asks the provider first."""
    rid = planned_in_process()
    due = by_kind(rid)["hours_before"]
    make_due([due.id])
    set_queued(due.id)
    prepared = sending._prepare(due.id, utcnow())  # claimed, as a worker would
    reminder_row, to, message = prepared
    _, taken = sending.provider_for("sms", runtime.settings, runtime.sessions).send(reference=str(due.id), to=to,
                                                                                     message=message)
    with runtime.transaction() as session:  # the dev provider's message is a row: here it is written alone
        session.execute(insert(taken.table), taken.row)
    # ... and the worker dies here. Later the row is stale and a task comes back.
    with runtime.transaction() as session:
        session.execute(update(Reminder).where(Reminder.id == due.id)
                        .values(sending_at=utcnow() - dt.timedelta(seconds=runtime.settings.sending_stale_seconds + 1)))
    assert sending.send_reminder(reminder_id=due.id) == "sent (found at the provider)"
    assert len(dev_messages(due.id)) == 1 and status_of(due.id) == "sent"


def test_temporary_failures_retry_with_backoff_then_give_up(processes):
    with NotifyServer() as notify:
        env = {"NOTIFICATIONS_SMS_PROVIDER": "notify", "NOTIFICATIONS_NOTIFY_API_KEY": API_KEY,
               "NOTIFICATIONS_NOTIFY_BASE_URL": notify.url, "NOTIFICATIONS_NOTIFY_SMS_TEMPLATE_ID": str(uuid.uuid4()),
               "NOTIFICATIONS_MAX_SEND_ATTEMPTS": "3", "NOTIFICATIONS_RETRY_BASE_SECONDS": "0.5", **FAST}
        processes.worker("notifications", [queues.NOTIFICATIONS_SEND], env=env)
        processes.scheduler("notifications", env=env)
        rid = planned_in_process()
        planned = by_kind(rid)

        # Down, then rate limited, then up: sent on the third attempt.
        notify.failures = [500, 429]
        make_due([planned["day_before"].id])
        wait_for(lambda: status_of(planned["day_before"].id) == "sent", timeout=30, what="sent after retries")
        assert len(notify.requests) == 3 and len(notify.received) == 1
        assert reminder(planned["day_before"].id).provider_ref == notify.received[0]["id"]

        # Down for good: three attempts, then technical failure, published.
        notify.always = 500
        started = time.monotonic()
        make_due([planned["hours_before"].id])
        wait_for(lambda: status_of(planned["hours_before"].id) == "technical-failure", timeout=30, what="given up")
        tries = [r for r in notify.requests if r["reference"] == str(planned["hours_before"].id)]
        assert len(tries) == 3
        assert time.monotonic() - started >= 1.5  # 0.5 s then 1 s of backoff
        failed = reminder(planned["hours_before"].id)
        assert failed.reason.startswith("gave up after 3 attempts")
        wait_for(lambda: [p["kind"] for p in outbox_events("reminder.failed")] == ["hours_before"],
                 what="reminder.failed")


def test_a_temporary_failure_in_a_chunk_retries_that_reminder_alone(processes):
    with NotifyServer() as notify:
        env = {"NOTIFICATIONS_SMS_PROVIDER": "notify", "NOTIFICATIONS_NOTIFY_API_KEY": API_KEY,
               "NOTIFICATIONS_NOTIFY_BASE_URL": notify.url, "NOTIFICATIONS_NOTIFY_SMS_TEMPLATE_ID": str(uuid.uuid4()),
               "NOTIFICATIONS_RETRY_BASE_SECONDS": "1", **FAST}
        processes.worker("notifications", [queues.NOTIFICATIONS_SEND], env=env)
        planned = by_kind(planned_in_process())
        first, second = planned["day_before"], planned["hours_before"]
        set_queued(first.id, second.id)
        notify.failures = [500]  # the chunk's first send fails once
        sending.publish_sends([first.id, second.id])
        wait_for(lambda: status_of(first.id) == status_of(second.id) == "sent", timeout=30, what="both sent")
        order = [r["reference"] for r in notify.requests]
        # The second went out at once; the first was tried again by itself, after its backoff.
        assert order == [str(first.id), str(second.id), str(first.id)]
        assert len(notify.received) == 2
        assert reminder(first.id).attempts == 2 and reminder(second.id).attempts == 1
        assert reminder(first.id).sent_at - reminder(second.id).sent_at >= dt.timedelta(seconds=0.9)


def test_one_bad_reminder_in_a_chunk_does_not_hold_up_the_others():
    from services.notifications.tasks import send_reminders

    planned = by_kind(planned_in_process())
    good = planned["hours_before"]
    make_due([good.id])
    set_queued(good.id)
    with pytest.raises(ValueError):  # raised once the rest of the chunk is done
        send_reminders.run(["not-a-reminder-id", str(good.id)])
    assert status_of(good.id) == "sent" and len(dev_messages(good.id)) == 1


def test_dispatchers_racing_claim_each_due_reminder_once(redis_client, redis_prefix):
    rid = planned_in_process()
    ids = [r.id for r in by_kind(rid).values()]
    with runtime.transaction() as session:
        for n in range(200):
            session.add(Reminder(id=uuid.uuid4(), referral_id=rid, site_id="croydon", fellowship="smart",
                                 meeting_slug="croydon-tuesday", kind="follow_up", channel="sms", contact_hash="h",
                                 meeting_start=utcnow() + dt.timedelta(minutes=n), due_at=utcnow(), status="created",
                                 attempts=0, in_doubt=False))
    make_due(ids)
    counts = []
    threads = [threading.Thread(target=lambda: counts.append(sending.dispatch_due(batch=17))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(counts) == 204  # 200 + the referral's three reminders and its confirmation
    tasks = queued_messages(redis_client, redis_prefix, queues.NOTIFICATIONS_SEND)
    sent_ids = [reminder_id for t in tasks for reminder_id in t["args"][0]]
    assert len(sent_ids) == 204 and len(set(sent_ids)) == 204
    assert {t["task"] for t in tasks} == {"notifications.send_reminders"}
    # Each claim (at most 17) goes out as chunks of at most NOTIFICATIONS_SEND_CHUNK (10).
    assert max(len(t["args"][0]) for t in tasks) == runtime.settings.send_chunk == 10
    assert sending.dispatch_due() == 0


def test_sweeper_requeues_stuck_rows(redis_client, redis_prefix):
    rid = planned_in_process()
    planned = by_kind(rid)
    old = utcnow() - dt.timedelta(hours=1)
    with runtime.transaction() as session:
        session.execute(update(Reminder).where(Reminder.id == planned["day_before"].id)
                        .values(status="sending", sending_at=old))
        session.execute(update(Reminder).where(Reminder.id == planned["hours_before"].id)
                        .values(status="queued", queued_at=old))
    assert sending.requeue_stuck() == 2
    tasks = queued_messages(redis_client, redis_prefix, queues.NOTIFICATIONS_SEND)
    assert sorted(i for t in tasks for i in t["args"][0]) == sorted([str(planned["day_before"].id),
                                                                     str(planned["hours_before"].id)])
    assert sending.requeue_stuck() == 1  # the queued one got a fresh queued_at; the sending one waits for its task


def test_shared_rate_limit_holds_across_workers(redis_client, redis_prefix):
    import redis as redis_lib

    key = f"{redis_prefix}test-rate"
    sent = []
    deadline = time.monotonic() + 2.0

    def worker():
        limit = sending.RateLimit(redis_lib.Redis.from_url(runtime.settings.redis_url), key, 1200, 1)  # 20 per second
        while time.monotonic() < deadline:
            limit.acquire()
            if time.monotonic() < deadline:
                sent.append(time.monotonic())

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert 38 <= len(sent) <= 42
