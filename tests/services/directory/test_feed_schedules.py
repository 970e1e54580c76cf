"""Schedules in the Meeting Guide feed: a weekly meeting goes out as the spec says it, a meeting that is not
simply weekly adds rrule/dtstart/exceptions (docs/FEEDS.md), and FAMA's importer reads them back."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, select

from services.directory import feeds, service
from services.directory.api import app
from services.directory.models import Meeting
from services.directory.runtime import runtime
from services.directory.schemas import MeetingIn
from tests.services.directory.helpers import meeting

pytestmark = pytest.mark.usefixtures("clean_state")
client = TestClient(app)

CLOSED = {"date": "2026-12-29", "closed": True, "note": "Christmas"}
CHANGED = {"date": "2027-01-05", "closed": False, "time": "12:00", "note": "upstairs"}


def add(**fields) -> None:
    with runtime.transaction() as session:
        service.create_meeting(session, meeting_in=MeetingIn(**meeting(**fields)))


def schedules() -> dict[str, tuple]:
    with runtime.sessions() as session:
        return {m.slug: (m.day, m.time, m.rrule, m.dtstart and m.dtstart.isoformat(), m.exceptions)
                for m in session.scalars(select(Meeting).where(Meeting.active.is_(True)))}


def test_weekly_meetings_go_out_as_before_and_the_rest_with_their_schedule_and_round_trip():
    add(slug="weekly")
    add(slug="weekly-closed", exceptions=[CLOSED, CHANGED])
    add(slug="monthly", day=None, rrule="FREQ=MONTHLY;BYDAY=1TU", dtstart="2026-12-01")
    add(slug="one-off", day=None, dtstart="2026-12-12")
    exported = {row["slug"]: row for row in client.get("/feeds/meeting-guide.json").json()}
    assert not {"rrule", "dtstart", "exceptions"} & exported["weekly"].keys()
    assert exported["weekly-closed"]["exceptions"] == [CLOSED, CHANGED] and "rrule" not in exported["weekly-closed"]
    assert (exported["monthly"]["day"], exported["monthly"]["rrule"], exported["monthly"]["dtstart"]) == \
        (2, "FREQ=MONTHLY;BYDAY=1TU", "2026-12-01")
    assert (exported["one-off"]["day"], exported["one-off"]["dtstart"]) == (6, "2026-12-12")
    before = schedules()
    with runtime.transaction() as session:
        session.execute(delete(Meeting))
    with runtime.transaction() as session:
        report = feeds.import_feed(session, rows=list(exported.values()), source="fama")
    assert report.created == 4 and not report.rejected
    assert schedules() == before
    again = {row["slug"]: row for row in client.get("/feeds/meeting-guide.json").json()}
    assert {s: {k: v for k, v in r.items() if k != "updated"} for s, r in again.items()} == \
        {s: {k: v for k, v in r.items() if k != "updated"} for s, r in exported.items()}


def test_a_row_with_a_schedule_fama_cannot_follow_is_rejected_with_its_reason():
    rows = [{"slug": "daily", "name": "Daily", "day": 2, "time": "19:00", "rrule": "FREQ=DAILY", "dtstart": "2026-12-01"},
            {"slug": "bad-date", "name": "Bad", "day": 2, "time": "19:00", "exceptions": [{"date": "2026-02-30"}]},
            {"slug": "fine", "name": "Fine", "day": 2, "time": "19:00", "rrule": "FREQ=WEEKLY;INTERVAL=2;BYDAY=TU",
             "dtstart": "2026-12-01"}]
    with runtime.transaction() as session:
        report = feeds.import_feed(session, rows=rows, source="other")
    # A rule FAMA cannot follow refuses the row; an impossible date is left out (and said), as any bad value.
    assert report.created == 2
    assert [(r.slug, "FREQ must be WEEKLY" in r.reason) for r in report.rejected] == [("daily", True)]
    assert [(r.slug, "2026-02-30" in r.reason) for r in report.left_out] == [("bad-date", True)]
    assert schedules()["bad-date"][4] == [] and schedules()["fine"][2] == "FREQ=WEEKLY;INTERVAL=2;BYDAY=TU"
