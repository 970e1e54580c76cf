"""The promise of answers.kept_until: an answer made at one moment reads exactly the same at every
later moment before the minute it names, whatever the meetings' times, schedules, exceptions and
zones, across midnight and a change of the clocks. Checked by computing the search and the meeting
JSON afresh at both moments (the code that serves them, with the clock given)."""

from __future__ import annotations

import datetime as dt

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from services.directory import answers
from services.directory.api import _meeting, _search_page, app
from services.directory.models import Meeting
from services.directory.runtime import runtime
from tests.services.directory.helpers import meeting
from tests.support.auth import auth

pytestmark = pytest.mark.usefixtures("clean_state")
ADMIN = auth("admin")
MEETINGS = [
    meeting(),  # Tuesday 14:00-15:30
    meeting(slug="croydon-aa-monday", fellowship="aa", day=1, time="19:00", end_time=None),
    meeting(slug="croydon-na-late", fellowship="na", day=0, time="23:30", end_time="00:30"),
    meeting(slug="croydon-ca-paris-time", fellowship="ca", day=3, time="07:45", end_time="08:45",
            timezone="Europe/Paris"),
    meeting(slug="croydon-first-tuesday", day=None, time="19:00", end_time="20:00",
            rrule="FREQ=MONTHLY;BYDAY=1TU", dtstart="2026-12-01",
            exceptions=[{"date": "2027-01-05", "closed": True, "note": "New Year"},
                        {"date": "2027-02-02", "closed": False, "time": "17:10", "end_time": "18:00", "note": "early"}]),
    meeting(slug="croydon-one-off", day=None, time="10:05", end_time=None, dtstart="2027-03-28"),
]
SEARCHES = [{}, {"sort": "soonest"}, {"day": [2]}, {"starts_after": "18:00"}]
START = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def search(now: dt.datetime, extra: dict) -> str:
    params = {"near": "CR0", "radius_km": 10.0, "day": [], "date": None, "starts_after": None, "starts_before": None,
              "fellowship": None, "types": [], "attendance": None, "q": None, "sort": None, "limit": 20,
              "offset": None, "page": None, **extra}
    return _search_page(**params, now=now).model_dump_json()


def answers_at(now: dt.datetime) -> list[str]:
    return [search(now, extra) for extra in SEARCHES] + [_meeting(m["slug"], now=now).model_dump_json() for m in MEETINGS]


@pytest.fixture
def meetings():
    client = TestClient(app)
    for body in MEETINGS:
        created = client.post("/meetings", json=body, headers=ADMIN)
        assert created.status_code == 201, created.text
    with runtime.reads() as session:
        return session.execute(select(Meeting.time, Meeting.end_time, Meeting.timezone, Meeting.exceptions)
                               .where(Meeting.time.is_not(None))).all()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(minutes=st.integers(0, 150 * 24 * 60), seconds=st.floats(0, 59.999), later=st.floats(0, 1),
       later_seconds=st.floats(0, 59.999))
@example(minutes=(dt.datetime(2027, 3, 28, 0, 5, tzinfo=dt.UTC) - START) // dt.timedelta(minutes=1),
         seconds=0.0, later=0.99, later_seconds=59.0)  # the clocks go forward at 01:00 UTC
@example(minutes=(dt.datetime(2026, 12, 1, 18, 59, tzinfo=dt.UTC) - START) // dt.timedelta(minutes=1),
         seconds=59.9, later=0.0, later_seconds=59.9)  # the last instant before a start
def test_an_answer_reads_the_same_until_the_minute_it_is_kept_to(meetings, minutes, seconds, later, later_seconds):
    made_at = START + dt.timedelta(minutes=minutes, seconds=seconds)
    minute = int(made_at.timestamp() // 60)
    horizon, turns = answers.turning_minutes(meetings, minute)
    until = next((t for t in turns if t > minute), horizon)
    assert minute < until <= horizon
    served_minute = minute + int(later * (until - minute - 1))  # a minute the answer would be served in
    served_at = dt.datetime.fromtimestamp(served_minute * 60 + later_seconds, dt.UTC)
    assert answers_at(served_at) == answers_at(made_at), (made_at, served_at, until)


def test_an_answer_is_not_kept_past_a_start_an_hour_before_it_or_an_end(meetings):
    """The moments themselves: a Tuesday 14:00-15:30 meeting in London turns at 13:00, 14:00 and
    15:30 (and 15:00, an hour after its start, which changes nothing here but is kept to)."""
    tuesday = dt.datetime(2026, 12, 8, 12, 30, tzinfo=dt.UTC)  # London is on UTC in December
    _, turns = answers.turning_minutes(meetings, int(tuesday.timestamp() // 60))
    as_times = [dt.datetime.fromtimestamp(t * 60, dt.UTC) for t in turns]
    for hhmm in ("13:00", "14:00", "15:30"):
        at = dt.datetime.combine(tuesday.date(), dt.time.fromisoformat(hhmm), dt.UTC)
        assert at in as_times, hhmm
    assert answers_at(dt.datetime(2026, 12, 8, 13, 59, 59, tzinfo=dt.UTC)) != \
        answers_at(dt.datetime(2026, 12, 8, 14, 0, 0, tzinfo=dt.UTC))  # the start does change them


def test_a_request_that_read_the_clock_before_the_turns_were_refreshed_still_finds_its_turn(meetings):
    """Two requests: one read the clock at 13:59, then another, at 14:00, refreshed what is held of
    the meetings. The first's answer must still end at 14:00 (the Tuesday meeting's start)."""
    at = dt.datetime(2026, 12, 8, 14, 0, tzinfo=dt.UTC)  # London is on UTC in December
    turn = int(at.timestamp() // 60)
    answers.kept_until(turn, ("refreshed at 14:00",))
    assert answers.kept_until(turn - 1, ("refreshed at 14:00",)) == turn


def test_no_answer_is_kept_longer_than_the_cap_even_with_no_meeting_for_days(meetings):
    """At most MAX_KEPT_MINUTES: a change whose mark Redis could not take shows within it."""
    quiet = int(dt.datetime(2026, 12, 8, 2, 0, tzinfo=dt.UTC).timestamp() // 60)  # no meeting near 02:00
    assert answers.kept_until(quiet, ("capped",)) == quiet + answers.MAX_KEPT_MINUTES
