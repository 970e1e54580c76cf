"""A dated closure end to end through real workers: a fortnightly meeting, a referral planned on one of its
dates, then staff close that date in the directory; the referral's reminders for it are cancelled, the client
is told (discreetly, as for a withdrawn meeting; the dev provider records the text), and the desk shows it."""

from __future__ import annotations

import datetime as dt
import re
import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from services.directory.api import app as directory_app
from services.notifications.models import DevMessage, Reminder
from services.notifications.models import meeting_replica as notifications_replica
from services.notifications.runtime import runtime as notifications
from services.referrals.api import app as referrals_app
from services.referrals.models import meeting_replica as referrals_replica
from services.referrals.runtime import runtime as referrals
from shared.events import FELLOWSHIP_NAMES, utcnow
from shared.meeting_time import long_date, meeting_guide_weekday
from tests.support.auth import auth
from tests.support.processes import wait_for

pytestmark = pytest.mark.usefixtures("clean_state")

KEYWORKER = auth("keyworker", "croydon")
ENV = {"NOTIFICATIONS_QUIET_START": "00:00", "NOTIFICATIONS_QUIET_END": "00:00", "NOTIFICATIONS_DISPATCH_SECONDS": "0.5"}


def tuesday_ahead(weeks: int) -> dt.date:
    start = utcnow().date() + dt.timedelta(days=7 * weeks)
    return next(start + dt.timedelta(days=i) for i in range(7) if meeting_guide_weekday(start + dt.timedelta(days=i)) == 2)


def in_replica(runtime, table) -> bool:
    with runtime.sessions() as session:
        return session.scalar(select(func.count()).select_from(table)) == 1


def reminders_of(referral_id: str) -> dict[str, Reminder]:
    with notifications.sessions() as session:
        return {r.kind: r for r in session.scalars(select(Reminder).where(Reminder.referral_id == uuid.UUID(referral_id)))}


def texts(reference) -> list[DevMessage]:
    with notifications.sessions() as session:
        return list(session.scalars(select(DevMessage).where(DevMessage.reference == str(reference))))


def test_closing_the_planned_date_cancels_its_reminders_tells_the_client_and_shows_on_the_desk(processes):
    for service in ("referrals", "notifications"):
        processes.worker(service, env=ENV)
    processes.worker("notifications", ["notifications.send"], env=ENV)
    processes.scheduler("notifications", env=ENV)
    first, planned = tuesday_ahead(1), tuesday_ahead(3)  # every other Tuesday: planned is its second date
    directory = TestClient(directory_app)
    created = directory.post("/meetings", headers=auth("admin"), json={
        "slug": "croydon-smart-fortnightly", "name": "SMART Recovery Croydon", "fellowship": "smart",
        "time": "14:00", "end_time": "15:30", "rrule": "FREQ=WEEKLY;INTERVAL=2;BYDAY=TU", "dtstart": first.isoformat(),
        "location": "Community Recovery Hub", "postcode": "CR0", "latitude": 51.372, "longitude": -0.074,
        "site_id": "croydon"})
    assert created.status_code == 201, created.text
    assert created.json()["schedule"] == "Every other Tuesday"
    wait_for(lambda: in_replica(referrals, referrals_replica) and in_replica(notifications, notifications_replica),
             timeout=120, what="the meeting in both replicas")

    desk = TestClient(referrals_app)
    off_week = desk.post("/referrals", headers=KEYWORKER, json={
        "meeting_slug": "croydon-smart-fortnightly", "support": "none", "client_reference": "CRY-0100",
        "mobile": "07812 345700", "consent": {"to_reminders": True, "wording_version": "2025-01"},
        "planned_date": (first + dt.timedelta(days=7)).isoformat()})
    assert off_week.status_code == 422 and "does not meet on" in off_week.json()["detail"]
    response = desk.post("/referrals", headers=KEYWORKER, json={
        "meeting_slug": "croydon-smart-fortnightly", "support": "none", "client_reference": "CRY-0101",
        "mobile": "07812 345701", "consent": {"to_reminders": True, "wording_version": "2025-01"},
        "planned_date": planned.isoformat()})
    assert response.status_code == 201, response.text
    referral_id = response.json()["id"]
    planned_kinds = {"day_before", "hours_before", "follow_up"}
    wait_for(lambda: planned_kinds <= reminders_of(referral_id).keys(), timeout=120, what="the reminders planned")

    closed = directory.post("/meetings/croydon-smart-fortnightly/exceptions", headers=auth("admin"),
                            json={"date": planned.isoformat(), "closed": True, "note": "Hall booked"})
    assert closed.status_code == 200, closed.text

    notice = wait_for(lambda: reminders_of(referral_id).get("meeting_cancelled"), timeout=120,
                      what="the client's notice planned")
    rows = reminders_of(referral_id)
    assert {rows[k].status for k in planned_kinds} == {"cancelled"}
    assert {rows[k].reason for k in planned_kinds} == {"meeting closed that day"}
    [text] = wait_for(lambda: texts(notice.id), timeout=120, what="the notice sent by the dev provider")
    assert text.channel == "sms" and "will not take place" in text.body and "Tuesday" in text.body
    assert not re.search("|".join(["smart", "recovery", *map(re.escape, FELLOWSHIP_NAMES.values())]), text.body, re.I)

    def desk_says() -> str | None:
        page = desk.get(f"/desk/referrals/{referral_id}", headers=KEYWORKER)
        found = re.search(r'<span id="meeting-change">(.*?)</span>', page.text, re.S)
        return found and re.sub(r"<[^>]+>", "", found.group(1))

    said = wait_for(desk_says, timeout=120, what="the closure on the desk")
    assert f"The planned session is closed: Closed {long_date(planned)}: Hall booked" in said
