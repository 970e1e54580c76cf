"""End to end: a meeting published by the directory reaches both replicas through real
Celery workers over real Redis, exactly once, even when delivered twice."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from services.directory.api import app as directory_app
from services.notifications.models import meeting_replica as notifications_replica
from services.notifications.runtime import runtime as notifications
from services.referrals.models import meeting_replica as referrals_replica
from services.referrals.runtime import runtime as referrals
from shared.db import make_sessionmaker, transaction
from shared.outbox import receipt_key
from tests.support.auth import auth
from tests.support.broker import queued_messages
from tests.support.processes import ROOT, wait_for

pytestmark = pytest.mark.usefixtures("clean_state")

MEETING = {
    "slug": "croydon-smart-tuesday", "name": "SMART Recovery Croydon", "fellowship": "smart", "day": 2,
    "time": "14:00", "end_time": "15:30", "types": ["O"], "attendance_option": "in_person",
    "location": "Community Recovery Hub", "postcode": "CR0", "latitude": 51.372, "longitude": -0.074,
    "site_id": "croydon",
}


def replica_rows(runtime, table):
    with runtime.sessions() as session:
        return session.execute(select(table)).all()


def test_meeting_published_reaches_referrals_and_notifications(processes):
    processes.worker("referrals")
    processes.worker("notifications")
    client = TestClient(directory_app)
    response = client.post("/meetings", json=MEETING, headers=auth("admin"))
    assert response.status_code == 201, response.text

    for runtime, table in ((referrals, referrals_replica), (notifications, notifications_replica)):
        rows = wait_for(lambda: replica_rows(runtime, table), what="the meeting in the replica")
        assert [(r.slug, r.fellowship, r.active) for r in rows] == [("croydon-smart-tuesday", "smart", True)]
        assert rows[0].snapshot["time"] == "14:00"
        assert rows[0].snapshot["site_id"] == "croydon"


def test_redelivered_event_is_processed_once(processes):
    processes.worker("referrals")
    from services.directory.runtime import runtime as directory
    from services.directory.schemas import MeetingIn
    from services.directory.service import create_meeting

    with directory.transaction() as session:
        create_meeting(session, meeting_in=MeetingIn(**MEETING))
    wait_for(lambda: replica_rows(referrals, referrals_replica), what="first delivery")
    # Force every outbox row to be sent again, as after a crash before marking it relayed.
    with directory.transaction() as session:
        session.execute(directory.outbox_table.update().values(relayed_at=None))
    assert directory.outbox.sweep(directory.sessions, older_than=dt.timedelta(0)) == 2
    wait_for(lambda: _inbox_count(referrals) == 1 and _queue_empty(), what="redelivery handled")
    assert _inbox_count(referrals) == 1
    assert len(replica_rows(referrals, referrals_replica)) == 1
    # The referrals worker left its receipt, so its copy is confirmed; no notifications worker
    # runs in this test, so that copy has no receipt and is sent again.
    checked = directory.outbox.confirm(directory.sessions, directory.redis, prefix=directory.settings.redis_key_prefix,
                                       resend_after=dt.timedelta(0))
    assert checked == {"confirmed": 1, "resent": 1}


def test_events_swept_together_travel_as_one_batch_and_are_each_processed_once(processes, redis_client, redis_prefix):
    from services.directory.runtime import runtime as directory
    from services.directory.schemas import MeetingIn
    from services.directory.service import create_meeting

    # Committed by a session whose commits nobody relays: the sweep finds them together.
    slugs = [f"croydon-smart-{i}" for i in range(3)]
    with transaction(make_sessionmaker(directory.engine)) as session:
        for slug in slugs:
            create_meeting(session, meeting_in=MeetingIn(**{**MEETING, "slug": slug}))
    assert directory.outbox.sweep(directory.sessions, older_than=dt.timedelta(0)) == 6
    for service in ("referrals", "notifications"):
        messages = queued_messages(redis_client, redis_prefix, f"{service}.events")
        assert [m["task"] for m in messages] == [f"{service}.handle_events"]
        assert [body["payload"]["slug"] for body in messages[0]["args"][0]] == slugs

    workers = [processes.worker("referrals"), processes.worker("notifications")]
    for runtime, table in ((referrals, referrals_replica), (notifications, notifications_replica)):
        rows = wait_for(lambda runtime=runtime, table=table: len(replica_rows(runtime, table)) == 3
                        and replica_rows(runtime, table), what=f"the batch in the {runtime.name} replica")
        assert sorted(r.slug for r in rows) == slugs
        assert _inbox_count(runtime) == 3
    # Each event left its own receipt, so each copy is confirmed and none is sent again.
    t = directory.outbox_table
    with directory.sessions() as session:
        rows = session.execute(select(t.c.subscriber, t.c.event_id)).all()
    prefix = directory.settings.redis_key_prefix
    wait_for(lambda: all(redis_client.exists(receipt_key(prefix, r.subscriber, r.event_id)) for r in rows),
             what="a receipt per event")
    checked = directory.outbox.confirm(directory.sessions, directory.redis, prefix=prefix, resend_after=dt.timedelta(0))
    assert checked == {"confirmed": 6, "resent": 0}

    # The whole batch delivered again changes nothing.
    with directory.transaction() as session:
        session.execute(t.update().values(relayed_at=None))
    assert directory.outbox.sweep(directory.sessions, older_than=dt.timedelta(0)) == 6
    for worker in workers:
        wait_for(lambda worker=worker: worker.log().count("event.duplicate_ignored") == 3,
                 what=f"{worker.name} to ignore the three duplicates")
    for runtime, table in ((referrals, referrals_replica), (notifications, notifications_replica)):
        assert _inbox_count(runtime) == 3
        assert len(replica_rows(runtime, table)) == 3


# The directory publishing a meeting, killed (SIGKILL) the moment its relay is about to send.
KILLED_BEFORE_THE_SEND = """
import json, os, signal, sys
from services.directory.runtime import runtime
from services.directory.schemas import MeetingIn
from services.directory.service import create_meeting

runtime.outbox.send_batch = lambda subscriber, bodies: os.kill(os.getpid(), signal.SIGKILL)
with runtime.transaction() as session:
    create_meeting(session, meeting_in=MeetingIn(**json.loads(sys.argv[1])))
"""


def test_an_event_whose_process_died_between_commit_and_send_reaches_both_replicas_once(processes, redis_client,
                                                                                           redis_prefix):
    """The relayed mark is committed with the change, so a process killed before its send leaves
    rows that look relayed and were never sent: the scheduler's confirm sends them, having no
    receipt, once OUTBOX_RESEND_SECONDS have passed (2 s here, 300 s by default)."""
    from services.directory.models import Meeting
    from services.directory.runtime import runtime as directory

    killed = subprocess.run([sys.executable, "-c", KILLED_BEFORE_THE_SEND, json.dumps(MEETING)], cwd=ROOT,
                            env=os.environ, capture_output=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode(errors="replace")[-3000:]
    with directory.sessions() as session:
        assert session.scalars(select(Meeting.slug)).all() == [MEETING["slug"]]  # the change was committed
        t = directory.outbox_table
        rows = session.execute(select(t.c.subscriber, t.c.relayed_at, t.c.confirmed_at)).all()
    assert sorted(r.subscriber for r in rows) == ["notifications", "referrals"]
    assert all(r.relayed_at is not None and r.confirmed_at is None for r in rows)  # marked, never sent
    for service in ("referrals", "notifications"):
        assert queued_messages(redis_client, redis_prefix, f"{service}.events") == []
    assert directory.outbox.sweep(directory.sessions, older_than=dt.timedelta(0)) == 0  # not the sweep's

    processes.worker("referrals")
    processes.worker("notifications")
    scheduler = processes.scheduler("directory", env={"OUTBOX_RESEND_SECONDS": "2"})
    for runtime, table in ((referrals, referrals_replica), (notifications, notifications_replica)):
        replica = wait_for(lambda runtime=runtime, table=table: replica_rows(runtime, table), timeout=60,
                           what=f"the meeting in the {runtime.name} replica")
        assert [r.slug for r in replica] == [MEETING["slug"]]

    def confirmed() -> bool:
        with directory.sessions() as session:
            return session.scalar(select(func.count()).select_from(t).where(t.c.confirmed_at.is_not(None))) == 2

    wait_for(confirmed, timeout=60, what="both copies confirmed by their receipts")
    assert "outbox.resent_unconfirmed" in scheduler.log()
    # However many times it was sent before the receipts came back, each replica has it once.
    for runtime, table in ((referrals, referrals_replica), (notifications, notifications_replica)):
        assert _inbox_count(runtime) == 1
        assert len(replica_rows(runtime, table)) == 1


def _inbox_count(runtime) -> int:
    with runtime.sessions() as session:
        return session.scalar(select(func.count()).select_from(runtime.inbox_table))


def _queue_empty() -> bool:
    import os

    import redis

    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    return client.llen(f"{os.environ['REDIS_KEY_PREFIX']}referrals.events") == 0


def test_bad_meeting_is_refused_and_nothing_is_published():
    client = TestClient(directory_app)
    response = client.post("/meetings", json={**MEETING, "day": 9, "time": "25:00"}, headers=auth("admin"))
    assert response.status_code == 422
    fields = {e["field"] for e in response.json()["errors"]}
    assert fields == {"day", "time"}
    from services.directory.runtime import runtime as directory

    with directory.sessions() as session:
        assert session.scalar(select(func.count()).select_from(directory.outbox_table)) == 0


def test_schedulers_prune_delivered_outbox_rows_and_old_inbox_rows(processes):
    """The directory scheduler deletes its outbox rows once confirmed and past the retention (0 days
    here); the referrals scheduler deletes inbox rows past theirs, never the recent ones."""
    from services.directory.runtime import runtime as directory

    processes.worker("referrals")
    processes.worker("notifications")
    client = TestClient(directory_app)
    assert client.post("/meetings", json=MEETING, headers=auth("admin")).status_code == 201
    wait_for(lambda: _inbox_count(referrals) == 1 and _inbox_count(notifications) == 1, timeout=60,
             what="the event in both inboxes")
    with referrals.transaction() as session:  # processed longer ago than the inbox retention
        session.execute(referrals.inbox_table.update().values(
            processed_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=referrals.settings.inbox_retention_days + 1)))
    fast = {"OUTBOX_RETENTION_DAYS": "0", "EVENT_PRUNE_SECONDS": "0.5", "OUTBOX_RESEND_SECONDS": "2"}
    scheduler = processes.scheduler("directory", env=fast)
    referrals_scheduler = processes.scheduler("referrals", env=fast)

    def outbox_rows() -> int:
        with directory.sessions() as session:
            return session.scalar(select(func.count()).select_from(directory.outbox_table))

    wait_for(lambda: outbox_rows() == 0, timeout=60, what="the confirmed outbox rows pruned")
    wait_for(lambda: _inbox_count(referrals) == 0, timeout=60, what="the old inbox row pruned")
    assert _inbox_count(notifications) == 1  # recent: kept, so a late redelivery is still recognised
    assert "event_prune" in scheduler.log() and "event_prune" in referrals_scheduler.log()
