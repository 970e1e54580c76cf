"""Meetings that are not simply weekly, and dated closures/changes: the API checks them (422, nothing
lost), publishes them, and search follows them (next occurrence, day and date filters, soonest first)."""

from __future__ import annotations

import datetime as dt

import pytest
from fastapi.testclient import TestClient

from services.directory import search, service
from services.directory.api import app
from services.directory.runtime import runtime
from services.directory.schemas import MeetingIn, SearchIn
from tests.services.directory.helpers import meeting, outbox_events
from tests.support.auth import auth

pytestmark = pytest.mark.usefixtures("clean_state")
client = TestClient(app)
ADMIN = auth("admin")
UTC = dt.UTC


def add(**fields) -> None:
    with runtime.transaction() as session:
        service.create_meeting(session, meeting_in=MeetingIn(**meeting(**fields)))


def found(now: dt.datetime, **filters) -> list[tuple[str, str | None]]:
    """(slug, next local start) of a search at ``now``, as the API would answer it."""
    with runtime.sessions() as session:
        page = search.search_meetings(session, search_in=SearchIn(now=now, **filters))
        return [(m.slug, s.isoformat() if (s := search.next_start(m, now)) else None) for m, _ in page["results"]]


def test_a_monthly_meeting_is_listed_at_its_own_week_not_the_coming_tuesday():
    add(slug="first-tuesday", day=None, time="19:00", rrule="FREQ=MONTHLY;BYDAY=1TU", dtstart="2026-12-01")
    add(slug="every-tuesday", day=2, time="18:00")
    now = dt.datetime(2026, 12, 7, 12, tzinfo=UTC)  # Monday 7 December: first Tuesday of January next
    results = dict(found(now, days=[2]))
    assert results["every-tuesday"] == "2026-12-08T18:00:00+00:00"
    assert results["first-tuesday"] == "2027-01-05T19:00:00+00:00"
    # Soonest first: the weekly one tomorrow, the monthly one four weeks on.
    assert [slug for slug, _ in found(now, sort="soonest")] == ["every-tuesday", "first-tuesday"]
    # Searching the date of the coming Tuesday: only the meeting that meets then.
    assert [slug for slug, _ in found(now, days=[2], on_date=dt.date(2026, 12, 8))] == ["every-tuesday"]
    assert [slug for slug, _ in found(now, days=[2], on_date=dt.date(2027, 1, 5))] == ["every-tuesday", "first-tuesday"]


def test_soonest_first_puts_a_fortnightly_meeting_in_its_week_among_weekly_ones():
    add(slug="fortnightly-wed", day=None, time="10:00", rrule="FREQ=WEEKLY;INTERVAL=2;BYDAY=WE", dtstart="2026-12-09")
    add(slug="weekly-mon", day=1, time="10:00")
    add(slug="weekly-fri", day=5, time="10:00")
    add(slug="by-appointment", day=None, time=None, end_time=None)
    monday = dt.datetime(2026, 12, 14, 7, tzinfo=UTC)  # the fortnightly one met on the 9th, next on the 23rd
    assert [s for s, _ in found(monday, sort="soonest")] == ["weekly-mon", "weekly-fri", "fortnightly-wed",
                                                             "by-appointment"]
    assert [s for s, _ in found(monday, sort="soonest", limit=2, offset=1)] == ["weekly-fri", "fortnightly-wed"]
    tuesday = dt.datetime(2026, 12, 8, 7, tzinfo=UTC)
    assert [s for s, _ in found(tuesday, sort="soonest")][:2] == ["fortnightly-wed", "weekly-fri"]
    # Near a place, the same order.
    assert [s for s, _ in found(monday, sort="soonest", near="CR0")] == ["weekly-mon", "weekly-fri",
                                                                         "fortnightly-wed", "by-appointment"]


def test_a_past_one_off_and_a_fully_closed_one_leave_search():
    add(slug="one-off-past", day=None, time="11:00", dtstart="2026-12-05")
    add(slug="one-off-closed", day=None, time="11:00", dtstart="2026-12-19",
        exceptions=[{"date": "2026-12-19", "closed": True, "note": "Cancelled"}])
    add(slug="one-off-coming", day=None, time="11:00", dtstart="2026-12-12")
    add(slug="ended-fortnightly", day=None, time="11:00", dtstart="2026-11-04",
        rrule="FREQ=WEEKLY;INTERVAL=2;BYDAY=WE;COUNT=2")
    now = dt.datetime(2026, 12, 7, 12, tzinfo=UTC)
    assert found(now) == [("one-off-coming", "2026-12-12T11:00:00+00:00")]
    assert [s for s, _ in found(now, sort="soonest")] == ["one-off-coming"]
    assert [s for s, _ in found(now, near="CR0")] == ["one-off-coming"]


def test_a_closed_date_is_skipped_visibly_and_in_progress_follows_a_changed_time():
    add(slug="friday", day=5, time="19:00", end_time="20:30",
        exceptions=[{"date": "2026-12-25", "closed": True, "note": "Christmas"},
                    {"date": "2027-01-01", "closed": False, "time": "17:00", "end_time": "18:00", "note": "early"}])
    response = client.get("/meetings/friday")
    body = response.json()
    assert body["exceptions_text"] == ["Closed Fri 25 December: Christmas", "Fri 1 January: at 17:00 to 18:00 (early)"]
    with runtime.sessions() as session:
        friday = service.get_meeting(session, "friday")
    christmas_eve = dt.datetime(2026, 12, 24, 12, tzinfo=UTC)
    assert search.next_start(friday, christmas_eve).isoformat() == "2027-01-01T17:00:00+00:00"
    assert search.happening(friday, dt.datetime(2027, 1, 1, 17, 30, tzinfo=UTC)) == "in_progress"
    assert search.happening(friday, dt.datetime(2026, 12, 25, 19, 30, tzinfo=UTC)) is None  # closed
    assert search.happening(friday, dt.datetime(2026, 12, 18, 19, 30, tzinfo=UTC)) == "in_progress"
    # The API's search result says what was skipped.
    from sqlalchemy import select

    from services.directory.api import _result
    from services.directory.models import Meeting
    with runtime.sessions() as session:
        row = session.execute(select(*search.public_columns()).where(Meeting.slug == "friday")).one()
    result = _result(row, None, christmas_eve)
    assert [(c.date, c.note) for c in result.closed_before_next] == [(dt.date(2026, 12, 25), "Christmas")]
    assert result.next_note == "early" and result.next_changed is True


def test_create_states_the_schedule_in_plain_english_and_publishes_it():
    body = meeting(slug="fortnightly", day=None, rrule="FREQ=WEEKLY;INTERVAL=2;BYDAY=TU", dtstart="2026-12-01",
                   exceptions=[{"date": "2026-12-29", "closed": True, "note": "Christmas week"}])
    response = client.post("/meetings", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["day"] == 2 and created["schedule"] == "Every other Tuesday"
    assert created["exceptions_text"] == ["Closed Tue 29 December: Christmas week"]
    [(kind, payload)] = outbox_events()
    assert kind == "meeting.published"
    assert payload["rrule"] == "FREQ=WEEKLY;INTERVAL=2;BYDAY=TU" and payload["dtstart"] == "2026-12-01"
    assert payload["exceptions"] == [{"date": "2026-12-29", "closed": True, "time": None, "end_time": None,
                                      "note": "Christmas week"}]
    one_off = client.post("/meetings", json=meeting(slug="one-off", day=None, dtstart="2026-12-12"), headers=ADMIN)
    assert one_off.json()["schedule"] == "One-off: Sat 12 December" and one_off.json()["day"] == 6


@pytest.mark.parametrize(("change", "field", "words"), [
    ({"rrule": "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30", "dtstart": "2026-12-01"}, "rrule", "BYMONTH, BYMONTHDAY cannot be used"),
    ({"rrule": "FREQ=DAILY", "dtstart": "2026-12-01"}, "rrule", "FREQ must be WEEKLY"),
    ({"rrule": "FREQ=WEEKLY;BYDAY=TU;UNTIL=20261101", "dtstart": "2026-12-01"}, "rrule", "never happens"),
    ({"rrule": "FREQ=MONTHLY;BYDAY=1TU"}, "dtstart", "first date"),
    ({"rrule": "FREQ=MONTHLY;BYDAY=1WE", "dtstart": "2026-12-01"}, "day", "Wednesdays"),
    ({"dtstart": "2026-02-30"}, "dtstart", "valid date"),
    ({"exceptions": [{"date": "2026-12-31", "closed": True}]}, "exceptions", "does not meet on Thu 31 December"),
    ({"exceptions": [{"date": "2026-13-01", "closed": True}]}, "exceptions.0.date", "valid date"),
    ({"exceptions": [{"date": "2026-12-29", "closed": True, "time": "18:00"}]}, "exceptions.0", "closed date"),
    ({"exceptions": [{"date": "2026-12-29", "closed": False}]}, "exceptions.0", "another start time or a note"),
])
def test_bad_schedules_get_a_422_saying_what_and_lose_nothing(change, field, words):
    assert client.post("/meetings", json=meeting(), headers=ADMIN).status_code == 201  # Tuesdays at 14:00
    before = client.get("/meetings/croydon-smart-tuesday").json()
    response = client.patch("/meetings/croydon-smart-tuesday", json=change, headers=ADMIN)
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert any(e["field"].endswith(field) and words in e["message"] for e in errors), errors
    after = client.get("/meetings/croydon-smart-tuesday").json()
    assert {k: after[k] for k in ("day", "rrule", "dtstart", "exceptions")} == \
        {k: before[k] for k in ("day", "rrule", "dtstart", "exceptions")}
    assert [kind for kind, _ in outbox_events()] == ["meeting.published"]


def test_closing_and_reopening_a_date_is_recorded_and_published():
    assert client.post("/meetings", json=meeting(), headers=ADMIN).status_code == 201  # Tuesdays
    closed = client.post("/meetings/croydon-smart-tuesday/exceptions",
                         json={"date": "2026-12-29", "closed": True, "note": "Christmas"}, headers=ADMIN)
    assert closed.status_code == 200, closed.text
    assert closed.json()["exceptions_text"] == ["Closed Tue 29 December: Christmas"]
    changed = client.post("/meetings/croydon-smart-tuesday/exceptions",
                          json={"date": "2026-12-29", "closed": False, "time": "12:00"}, headers=ADMIN)
    assert changed.json()["exceptions_text"] == ["Tue 29 December: at 12:00"]
    assert client.delete("/meetings/croydon-smart-tuesday/exceptions/2026-12-29", headers=ADMIN).status_code == 200
    missing = client.delete("/meetings/croydon-smart-tuesday/exceptions/2026-12-29", headers=ADMIN)
    assert missing.status_code == 404 and "no closure or change on 2026-12-29" in missing.text
    impossible = client.delete("/meetings/croydon-smart-tuesday/exceptions/2026-02-30", headers=ADMIN)
    assert impossible.status_code == 422
    not_a_meeting_day = client.post("/meetings/croydon-smart-tuesday/exceptions",
                                    json={"date": "2026-12-30", "closed": True}, headers=ADMIN)
    assert not_a_meeting_day.status_code == 422 and "does not meet on Wed 30 December" in not_a_meeting_day.text
    events = outbox_events()
    assert [kind for kind, _ in events] == ["meeting.published"] + ["meeting.updated"] * 3
    assert events[1][1]["exceptions"][0]["closed"] is True and events[3][1]["exceptions"] == []
    from services.directory.models import MeetingChange
    with runtime.sessions() as session:
        history = [(c.action, c.fields, c.reason) for c in session.query(MeetingChange).order_by(MeetingChange.id)]
    assert history[1] == ("updated", "exceptions", "Closed Tue 29 December: Christmas (added)")
    assert history[3] == ("updated", "exceptions", "Tue 29 December: at 12:00 (removed)")


# --- pages: the schedule in plain English, closures visible, the calendar file --------------------

def _page_text(html_text: str) -> str:
    from tests.services.directory.test_pages import text
    return text(html_text)


def _coming(weekday: int) -> dt.date:
    """A date on that Meeting Guide weekday between 8 and 14 days from now (in the future whatever the hour)."""
    start = dt.datetime.now(UTC).date() + dt.timedelta(days=8)
    return next(start + dt.timedelta(days=i) for i in range(7) if (start + dt.timedelta(days=i)).isoweekday() % 7 == weekday)


def test_meeting_page_and_result_card_say_the_schedule_and_the_closed_date():
    first = _coming(2)
    add(slug="fortnightly", name="Fortnightly SMART", day=None, time="14:00", end_time="15:30",
        rrule="FREQ=WEEKLY;INTERVAL=2;BYDAY=TU", dtstart=first.isoformat(),
        exceptions=[{"date": first.isoformat(), "closed": True, "note": "Hall booked"}])
    add(slug="first-tuesday", name="Monthly AA", fellowship="aa", day=None, time="19:00",
        rrule="FREQ=MONTHLY;BYDAY=1TU", dtstart=first.isoformat())
    add(slug="one-off", name="Recovery Day", day=None, time="11:00", end_time=None, dtstart=first.isoformat())
    page = _page_text(client.get("/meeting/fortnightly").text)
    closed = f"Closed {first:%a} {first.day} {first:%B}: Hall booked"
    after = first + dt.timedelta(days=14)
    assert "Every other Tuesday, 2:00pm to 3:30pm" in page
    assert f"{closed} — next: Tuesday {after.day} {after:%B}, 2:00pm" in page
    assert f"{first:%a} {first.day} {first:%B}: closed (Hall booked)" in page  # in the next meetings list
    assert "First Tuesday of the month, 7:00pm" in _page_text(client.get("/meeting/first-tuesday").text)
    assert f"One-off: {first:%a} {first.day} {first:%B}, 11:00am" in _page_text(client.get("/meeting/one-off").text)
    cards = _page_text(client.get("/?near=CR0&distance=5").text)
    assert "Every other Tuesday" in cards and f"{closed} — next:" in cards and "First Tuesday of the month" in cards


def test_the_calendar_file_repeats_as_the_schedule_does_without_the_closed_date():
    from icalendar import Calendar

    first = _coming(2)
    changed = first + dt.timedelta(days=28)
    add(slug="fortnightly", day=None, time="14:00", end_time="15:30", rrule="FREQ=WEEKLY;INTERVAL=2;BYDAY=TU",
        dtstart=first.isoformat(),
        exceptions=[{"date": (first + dt.timedelta(days=14)).isoformat(), "closed": True, "note": "Christmas"},
                    {"date": changed.isoformat(), "closed": False, "time": "12:00", "note": "early"}])
    response = client.get("/meeting/fortnightly.ics")
    assert response.status_code == 200
    series, instance = [c for c in Calendar.from_ical(response.content).walk("VEVENT")]
    assert series["rrule"]["FREQ"] == ["WEEKLY"] and series["rrule"]["INTERVAL"] == [2]
    assert series["rrule"]["BYDAY"] == ["TU"]
    assert series.decoded("dtstart").date() == first
    assert [d.dt.date() for d in series["exdate"].dts] == [first + dt.timedelta(days=14)]
    assert instance["uid"] == series["uid"]
    assert instance.decoded("recurrence-id").date() == changed
    assert instance.decoded("dtstart").strftime("%H:%M") == "12:00"
    add(slug="one-off", day=None, time="11:00", dtstart=first.isoformat())
    [one] = Calendar.from_ical(client.get("/meeting/one-off.ics").content).walk("VEVENT")
    assert "rrule" not in one and one.decoded("dtstart").date() == first
    add(slug="past", day=None, time="11:00", dtstart="2026-01-03")
    assert client.get("/meeting/past.ics").status_code == 404
