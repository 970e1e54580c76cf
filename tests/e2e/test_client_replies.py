"""A client's texts end to end through real workers: the inbound callback, sealed events over
Redis to the referral desk, the keyworker's one-click confirmation, the directory's counters;
and STOP then START restoring consent on the desk."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from services.directory.api import app as directory_app
from services.directory.models import EngagementCount
from services.directory.runtime import runtime as directory
from services.notifications.api import app as notifications_app
from services.notifications.models import Reminder
from services.notifications.runtime import runtime as notifications
from services.referrals.api import app as referrals_app
from services.referrals.models import ClientReply
from services.referrals.models import meeting_replica as referrals_replica
from services.referrals.runtime import runtime as referrals
from shared.events import utcnow
from shared.meeting_time import meeting_guide_weekday
from tests.support.auth import auth
from tests.support.processes import wait_for

pytestmark = pytest.mark.usefixtures("clean_state")

KEYWORKER = auth("keyworker", "croydon")
ENV = {"NOTIFICATIONS_QUIET_START": "00:00", "NOTIFICATIONS_QUIET_END": "00:00", "NOTIFICATIONS_DISPATCH_SECONDS": "0.5"}
MEETING = {"slug": "croydon-smart-tuesday", "name": "SMART Recovery Croydon", "fellowship": "smart", "day": 2,
           "time": "14:00", "end_time": "15:30", "types": ["O"], "attendance_option": "in_person",
           "location": "Community Recovery Hub", "postcode": "CR0", "latitude": 51.372, "longitude": -0.074,
           "site_id": "croydon"}
NOTIFY = {"Authorization": f"Bearer {notifications.settings.callback_token}"}


def next_tuesday() -> dt.date:
    start = utcnow().date() + dt.timedelta(days=7)
    return next(start + dt.timedelta(days=i) for i in range(7) if meeting_guide_weekday(start + dt.timedelta(days=i)) == 2)


def text_in(mobile: str, message: str, message_id: str | None = None) -> dict:
    response = TestClient(notifications_app).post("/callbacks/inbound-sms", headers=NOTIFY, json={
        "id": message_id or str(uuid.uuid4()), "source_number": "44" + mobile.replace(" ", "")[1:],
        "destination_number": "07700900000", "message": message, "date_received": utcnow().isoformat()})
    assert response.status_code == 200, response.text
    return response.json()


def counted(metric: str) -> int:
    with directory.sessions() as session:
        return session.scalar(select(func.coalesce(func.sum(EngagementCount.count), 0))
                              .where(EngagementCount.metric == metric))


def replies(referral_id: str) -> list[ClientReply]:
    with referrals.sessions() as session:
        return list(session.scalars(select(ClientReply).where(ClientReply.referral_id == uuid.UUID(referral_id))
                                    .order_by(ClientReply.received_at)))


def test_texts_reach_the_desk_and_a_confirmed_yes_reaches_the_counters(processes):
    for service in ("referrals", "notifications", "directory"):
        processes.worker(service, env=ENV)
    processes.worker("notifications", ["notifications.send"], env=ENV)
    processes.scheduler("notifications", env=ENV)
    assert TestClient(directory_app).post("/meetings", json=MEETING, headers=auth("admin")).status_code == 201

    def in_replica() -> bool:
        with referrals.sessions() as session:
            return session.scalar(select(func.count()).select_from(referrals_replica)) == 1

    wait_for(in_replica, timeout=120, what="the meeting in the referrals replica")
    desk = TestClient(referrals_app)
    ids = {}
    for mobile in ("07812 345701", "07812 345702"):
        response = desk.post("/referrals", headers=KEYWORKER, json={
            "meeting_slug": MEETING["slug"], "support": "none", "client_reference": f"CRY-{mobile[-4:]}",
            "mobile": mobile, "consent": {"to_reminders": True, "wording_version": "2025-01"},
            "planned_date": next_tuesday().isoformat()})
        assert response.status_code == 201, response.text
        ids[mobile] = response.json()["id"]
    yes_client, stop_client = ids

    def follow_up(referral_id: str) -> Reminder | None:
        with notifications.sessions() as session:
            return session.scalar(select(Reminder).where(Reminder.referral_id == uuid.UUID(referral_id),
                                                         Reminder.kind == "follow_up"))

    row = wait_for(lambda: follow_up(ids[yes_client]), timeout=120, what="the reminders planned")
    with notifications.transaction() as session:  # the meeting happened: the follow-up is due
        session.execute(update(Reminder).where(Reminder.id == row.id).values(
            meeting_start=utcnow() - dt.timedelta(hours=3), meeting_end=utcnow() - dt.timedelta(hours=2),
            due_at=utcnow()))
    wait_for(lambda: follow_up(ids[yes_client]).sent_at is not None, timeout=120, what="the follow-up sent")

    # The ambiguous replies opt nobody out; they reach the desk. Then YES, retried by Notify.
    for words in ("Please don't cancel my lift", "stayed to the end", "the bus doesn't stop near the hall"):
        assert text_in(yes_client, words) == {"outcome": "reply passed on"}
    once = str(uuid.uuid4())
    assert text_in(yes_client, "YES", once) == {"outcome": "attendance reported"}
    assert text_in(yes_client, "YES", once) == {"outcome": "already received"}
    got = wait_for(lambda: len(replies(ids[yes_client])) == 4 and replies(ids[yes_client]), timeout=120,
                   what="the replies on the desk")
    assert [(r.text, r.attendance) for r in got] == [
        ("Please don't cancel my lift", None), ("stayed to the end", None),
        ("the bus doesn't stop near the hall", None), ("YES", "attended")]
    wait_for(lambda: counted("client_reported_attended") == 1, timeout=120, what="the client's report counted")
    assert desk.get(f"/referrals/{ids[yes_client]}", headers=KEYWORKER).json()["consent"]["withdrawn_at"] is None

    confirm = desk.post(f"/desk/referrals/{ids[yes_client]}/replies/{got[-1].id}/confirmation",
                        data={"accompanied": "no"}, headers=KEYWORKER, follow_redirects=False)
    assert confirm.status_code == 303
    wait_for(lambda: counted("attendance_confirmed") == 1 and counted("first_meeting_attended") == 1, timeout=120,
             what="the confirmation counted")
    assert counted("client_reported_attended") == 1

    # STOP, then START: the desk sees consent withdrawn by the client, then standing again.
    assert text_in(stop_client, "Stop please") == {"outcome": "opted out"}
    withdrawn = lambda: desk.get(f"/referrals/{ids[stop_client]}", headers=KEYWORKER).json()["consent"]["withdrawn_at"]  # noqa: E731
    wait_for(lambda: withdrawn() is not None, timeout=120, what="the opt-out on the desk")
    assert text_in(stop_client, "START") == {"outcome": "opted in"}
    wait_for(lambda: withdrawn() is None, timeout=120, what="the opt-in on the desk")
