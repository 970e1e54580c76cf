"""The promise of answers.kept_until: an answer made at one moment reads exactly the same at every
later moment before the minute it names, whatever the meetings' times, schedules, exceptions and
zones, across midnight and a change of the clocks. Checked by computing the search and the meeting
JSON afresh at both moments (the code that serves them, with the clock given)."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from services.directory import answers
from services.directory import search as search_module
from services.directory.api import _meeting, _result, _search_page, app
from services.directory.models import Meeting
from services.directory.runtime import runtime
from services.directory.schemas import MeetingPage, SearchIn
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


def search(now: dt.datetime, extra: dict, keeping: answers.Keeping | None = None) -> str:
    params = {"near": "CR0", "radius_km": 10.0, "day": [], "date": None, "starts_after": None, "starts_before": None,
              "fellowship": None, "types": [], "attendance": None, "q": None, "sort": None, "limit": 20,
              "offset": None, "page": None, **extra}
    return _search_page(**params, now=now, keeping=keeping).decode()


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


# Searches whose results share meetings: a date's (its own moment), a far place's (the meetings
# "beyond" it, at other distances), the soonest first.
SHARING = [{}, {"sort": "soonest"}, {"day": [2]}, {"date": "a week on"}, {"near": "51.9,-0.6", "radius_km": 5.0},
           {"radius_km": 3.0, "limit": 2}]


def _dated(extra: dict, now: dt.datetime) -> dict:
    if extra.get("date") == "a week on":  # the same day of the week: its meetings, a week later
        return {**extra, "date": now.astimezone(search_module.SORT_ZONE).date() + dt.timedelta(days=7)}
    return extra


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(minutes=st.integers(0, 150 * 24 * 60), seconds=st.floats(0, 59.999), later=st.floats(0, 1),
       first=st.sampled_from(SHARING), second=st.sampled_from(SHARING))
@example(minutes=7 * 24 * 60 + 12 * 60, seconds=0.0, later=0.5, first={"date": "a week on"}, second={})  # a Tuesday
@example(minutes=7 * 24 * 60 + 12 * 60, seconds=0.0, later=0.5, first={}, second={"date": "a week on"})
def test_a_search_made_with_results_kept_by_another_reads_as_one_made_afresh(meetings, minutes, seconds, later,
                                                                             first, second):
    """api._results_shown: each meeting as an earlier search showed it serves a later search until the
    minute the earlier one was kept to; the answer is byte for byte the one made with nothing kept."""
    made_at = START + dt.timedelta(minutes=minutes, seconds=seconds)
    minute, stamp = int(made_at.timestamp() // 60), (f"results kept at {made_at}", later)
    search(made_at, _dated(first, made_at), answers.Keeping(stamp, minute, answers.searches))
    until = answers.kept_until(minute, stamp)
    served_minute = minute + int(later * (until - minute - 1))
    served_at = dt.datetime.fromtimestamp(served_minute * 60 + 30, dt.UTC)
    extra = _dated(second, served_at)
    assert search(served_at, extra, answers.Keeping(stamp, served_minute, answers.searches)) == \
        search(served_at, extra), (made_at, served_at, first, second)


def test_a_search_page_is_what_pydantic_writes_of_it_whatever_the_meetings_say():
    """The page is spliced from each result's JSON: it must be what MeetingPage writes, even when an
    admin's text looks like the fields it is spliced at."""
    client = TestClient(app)
    hostile = meeting(slug="croydon-hostile", name='"results":[],"beyond":[]}', location='"distance_km":null',
                      notes='{"distance_km":null,"results":[],"beyond":[]}', latitude=51.38, longitude=-0.09)
    for body in (meeting(), hostile, meeting(slug="croydon-far", latitude=51.9, longitude=-0.6)):
        assert client.post("/meetings", json=body, headers=ADMIN).status_code == 201
    now = dt.datetime(2026, 12, 8, 13, 30, tzinfo=dt.UTC)
    for extra in ({}, {"near": "51.95,-0.65", "radius_km": 1.0}):  # the second finds only "beyond"
        made = search(now, extra, answers.Keeping(("pydantic", str(extra)), int(now.timestamp() // 60),
                                                  answers.searches))
        search_in = SearchIn(near=extra.get("near", "CR0"), radius_km=extra.get("radius_km", 10.0), now=now)
        with runtime.reads() as session:
            found = search_module.search_meetings(session, search_in=search_in)
        written = MeetingPage(total=found["total"], limit=20, offset=0, near=found["near"],
                              results=[_result(m, d, now) for m, d in found["results"]],
                              beyond=[_result(m, d, now) for m, d in found["beyond"]]).model_dump_json(by_alias=True)
        assert made == written
        page = json.loads(made)
        shown = {r["slug"]: r for r in page["results"] + page["beyond"]}
        assert "croydon-hostile" in shown and len(shown) == len(page["results"]) + len(page["beyond"]) > 1
        assert shown["croydon-hostile"]["location"] == '"distance_km":null'
        assert all(isinstance(r["distance_km"], float) for r in shown.values())
    assert page["results"] == [] and page["beyond"], page  # the far search: only what lies beyond
