"""A meeting that changes under open referrals shows on each referral and in the work queue until
the site's staff have seen it; a replay, a stale event or a change that does not matter to a
client shows nothing, and ended referrals are left alone."""

from __future__ import annotations

import datetime as dt

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from services.referrals.api import app
from services.referrals.handlers import HANDLERS
from services.referrals.models import Referral
from services.referrals.runtime import runtime
from shared.events import Event, MeetingSnapshot, MeetingWithdrawn, utcnow
from shared.meeting_time import long_date, next_occurrence
from tests.services.referrals.conftest import TUESDAY_MEETING, next_weekday, publish_meeting, referral_body
from tests.services.referrals.test_pages import get
from tests.services.referrals.test_replies import as_user, make_referral
from tests.support.auth import auth

pytestmark = pytest.mark.usefixtures("clean_state")
client = TestClient(app)
LEAD = as_user("lead-1", "site_lead")
KEYWORKER = auth("keyworker", site="croydon")


def next_tuesday() -> dt.date:
    """The coming Tuesday whose 14:00 session has not started."""
    return next_weekday(2)


@pytest.fixture(autouse=True)
def meeting(clean_state) -> MeetingSnapshot:
    return publish_meeting()


def update_meeting(at: dt.datetime | None = None, **changes) -> MeetingSnapshot:
    snapshot = MeetingSnapshot(**{**TUESDAY_MEETING, **changes})
    assert runtime.handle(Event.new("meeting.updated", snapshot, producer="directory", occurred_at=at)
                          .model_dump(mode="json"), HANDLERS)
    return snapshot


def flagged() -> dict[str, str | None]:
    with runtime.sessions() as session:
        return {r.client_reference: r.meeting_change for r in session.scalars(select(Referral))}


def test_a_moved_meeting_shows_on_its_open_referrals_and_in_the_queue_until_seen():
    open_one = make_referral("CRY-0001", by="kw-1")
    make_referral("CRY-0002", by="kw-2")
    ended = make_referral("CRY-0003", by="kw-1")
    with runtime.transaction() as session:
        session.get(Referral, ended).status = "cancelled"  # ended: nothing more to arrange

    update_meeting(time="18:30")
    assert flagged() == {"CRY-0001": "Moved from Tuesday 14:00 to Tuesday 18:30",
                         "CRY-0002": "Moved from Tuesday 14:00 to Tuesday 18:30", "CRY-0003": None}
    queue = get(client, "/desk/queue", headers=LEAD)
    assert queue.by_id("count-meeting_changed") == "2"
    assert "CRY-0001" in queue.by_id("queue-meeting_changed") and "CRY-0003" not in queue.by_id("queue-meeting_changed")

    page = get(client, f"/desk/referrals/{open_one}", headers=as_user("kw-1"))
    assert "Moved from Tuesday 14:00 to Tuesday 18:30" in page.by_id("meeting-change") and "New" in page.by_id("meeting-change")
    after = get(client, "/desk/queue", headers=LEAD)
    assert after.by_id("count-meeting_changed") == "1", "seen by the site's keyworker: off the queue"
    again = get(client, f"/desk/referrals/{open_one}", headers=as_user("kw-1"))
    assert "New" not in again.by_id("meeting-change") and "Moved from" in again.by_id("meeting-change")

    # An admin's look does not count as the site having seen it.
    with runtime.sessions() as session:
        second = session.scalar(select(Referral.id).where(Referral.client_reference == "CRY-0002"))
    get(client, f"/desk/referrals/{second}", headers=as_user("admin-1", "admin", site=None))
    assert get(client, "/desk/queue", headers=LEAD).by_id("count-meeting_changed") == "1"


def test_replays_stale_events_and_changes_that_do_not_matter_show_nothing():
    make_referral("CRY-0001")
    publish_meeting()  # the same snapshot again (a replay of the directory's state)
    update_meeting(name="SMART Recovery Croydon (Tuesdays)", types=["O", "D"])  # name and types: not news
    assert flagged() == {"CRY-0001": None}
    update_meeting(at=utcnow() - dt.timedelta(days=1), time="09:00")  # older than what is stored
    assert flagged() == {"CRY-0001": None}


@pytest.mark.parametrize(("changes", "said"), [
    ({"location": "St Mark's Hall", "postcode": "CR0 2AA"}, "New venue or address"),
    ({"attendance_option": "online", "conference_url": "https://zoom.us/j/1"}, "Now online; new joining details"),
    ({"day": 3}, "Moved from Tuesday 14:00 to Wednesday 14:00"),
    ({"end_time": "15:30"}, "Now ends at 15:30"),
])
def test_each_kind_of_change_is_said_plainly(changes, said):
    make_referral("CRY-0001")
    update_meeting(**changes)
    assert flagged() == {"CRY-0001": said}


def test_a_withdrawn_meeting_is_flagged_and_a_later_change_replaces_the_note():
    make_referral("CRY-0001")
    snapshot = MeetingSnapshot(**TUESDAY_MEETING)
    assert runtime.handle(Event.new("meeting.withdrawn", MeetingWithdrawn(slug=snapshot.slug, meeting=snapshot),
                                    producer="directory").model_dump(mode="json"), HANDLERS)
    assert flagged() == {"CRY-0001": "The meeting was withdrawn"}
    update_meeting(time="16:00")
    assert flagged() == {"CRY-0001": "The meeting is running again"}


# --- a dated closure or change of the planned session -----------------------------------------

def test_closing_the_planned_session_shows_on_that_referral_only():
    tuesday = next_tuesday()
    on_the_day = make_referral("CRY-0001", by="kw-1", planned=tuesday)
    make_referral("CRY-0002", by="kw-1", planned=tuesday + dt.timedelta(days=7))
    update_meeting(exceptions=[{"date": tuesday, "closed": True, "note": "Christmas"}])
    said = f"The planned session is closed: Closed {long_date(tuesday)}: Christmas"
    assert flagged() == {"CRY-0001": said, "CRY-0002": None}
    assert get(client, "/desk/queue", headers=LEAD).by_id("count-meeting_changed") == "1"
    page = get(client, f"/desk/referrals/{on_the_day}", headers=as_user("kw-1"))
    assert said in page.by_id("meeting-change")
    update_meeting(exceptions=[])  # open again
    assert flagged()["CRY-0001"] == f"The planned session on {long_date(tuesday)} is on as usual again"


def test_a_changed_time_on_the_planned_session_is_said():
    tuesday = next_tuesday()
    make_referral("CRY-0001", by="kw-1", planned=tuesday)
    update_meeting(exceptions=[{"date": tuesday, "closed": False, "time": "12:00", "note": "upstairs"}])
    assert flagged()["CRY-0001"] == f"The planned session is changed: {long_date(tuesday)}: at 12:00 (upstairs)"


def test_a_new_schedule_is_said_in_plain_english():
    make_referral("CRY-0001", by="kw-1")
    update_meeting(rrule="FREQ=MONTHLY;BYDAY=1TU", dtstart=next_tuesday())
    assert flagged()["CRY-0001"] == "Now First Tuesday of the month at 14:00"


def test_a_closed_date_cannot_be_planned_and_the_next_open_one_is_the_default():
    soonest = next_occurrence(2, "14:00", "Europe/London", utcnow()).date()
    update_meeting(exceptions=[{"date": soonest, "closed": True, "note": "Christmas"}])
    response = client.post("/referrals", json=referral_body(planned_date=soonest.isoformat()), headers=KEYWORKER)
    assert response.status_code == 422 and "closed on" in response.json()["detail"] and "Christmas" in response.text
    response = client.post("/referrals", json=referral_body(), headers=KEYWORKER)
    assert response.status_code == 201, response.text
    assert response.json()["planned_date"] == (soonest + dt.timedelta(days=7)).isoformat()
