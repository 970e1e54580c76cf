"""End to end with real worker processes: a referral made at the desk reaches notifications and
directory exactly once each, even when the outbox sends it again; no worker logs the contact.

Only the subscribers' inbox rows are asserted: their domain tables belong to their services.
"""

from __future__ import annotations

import datetime as dt
import uuid

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from services.notifications.models import meeting_replica as notifications_replica
from services.notifications.runtime import runtime as notifications
from services.referrals.api import app
from services.referrals.runtime import runtime as referrals
from shared.events import Event, MeetingSnapshot
from shared.replica import apply_meeting_event
from tests.services.referrals.conftest import EMAIL, MOBILE_E164, PLAINTEXTS, TUESDAY_MEETING, referral_body
from tests.support.auth import auth
from tests.support.processes import wait_for


def inbox_ids(runtime, event_type: str) -> list[uuid.UUID]:
    t = runtime.inbox_table
    with runtime.sessions() as session:
        return list(session.scalars(select(t.c.event_id).where(t.c.event_type == event_type)))


def queue_length(redis_client, redis_prefix, queue: str) -> int:
    return redis_client.llen(f"{redis_prefix}{queue}")


def test_referral_reaches_notifications_and_directory_exactly_once(meeting, processes, redis_client, redis_prefix):
    from services.directory.runtime import runtime as directory

    # Notifications plans reminders from its own meeting replica: give it the same meeting.
    published = Event.new("meeting.published", MeetingSnapshot(**TUESDAY_MEETING), producer="directory")
    with notifications.transaction() as session:
        apply_meeting_event(session, notifications_replica, published)

    response = TestClient(app).post("/referrals", json=referral_body(), headers=auth("keyworker", "croydon"))
    assert response.status_code == 201, response.text
    with referrals.sessions() as session:
        t = referrals.outbox_table
        event_id = session.scalar(select(t.c.event_id).where(t.c.event_type == "referral.created"))

    workers = [processes.worker("notifications"), processes.worker("directory")]
    for runtime in (notifications, directory):
        wait_for(lambda runtime=runtime: inbox_ids(runtime, "referral.created"), timeout=30,
                 what=f"{runtime.name} to process referral.created")

    # The outbox sends every row again, as after a crash before marking them relayed.
    with referrals.transaction() as session:
        session.execute(referrals.outbox_table.update().values(relayed_at=None))
    assert referrals.outbox.sweep(referrals.sessions, older_than=dt.timedelta(0)) == 2
    wait_for(lambda: all(queue_length(redis_client, redis_prefix, q) == 0
                         for q in ("notifications.events", "directory.events")),
             timeout=30, what="both redeliveries to be taken")
    for worker in workers:  # each worker handled (and ignored) its copy
        wait_for(lambda worker=worker: "event.duplicate_ignored" in worker.log(), timeout=15,
                 what=f"{worker.name} to see the duplicate")

    for runtime in (notifications, directory):
        assert inbox_ids(runtime, "referral.created") == [event_id]
        with runtime.sessions() as session:
            assert session.scalar(select(func.count()).select_from(runtime.inbox_table)
                                  .where(runtime.inbox_table.c.event_id == event_id)) == 1
    for worker in workers:
        worker.stop()
        for plain in (*PLAINTEXTS, MOBILE_E164, EMAIL):
            assert plain not in worker.log(), f"{plain!r} in the {worker.name} log"
