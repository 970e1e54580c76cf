"""End to end: a meeting published by the directory reaches both replicas through real
Celery workers over real Redis, exactly once, even when delivered twice."""

from __future__ import annotations

import datetime as dt

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from services.directory.api import app as directory_app
from services.notifications.models import meeting_replica as notifications_replica
from services.notifications.runtime import runtime as notifications
from services.referrals.models import meeting_replica as referrals_replica
from services.referrals.runtime import runtime as referrals
from tests.support.auth import auth
from tests.support.processes import wait_for

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
