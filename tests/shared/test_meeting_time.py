"""When meetings happen: weekly ones across the BST/GMT changes (Europe/London), and schedules that are not
simply weekly (fortnightly, monthly, one-off) with dated closures and changes."""

from __future__ import annotations

import datetime as dt

from shared.meeting_time import local_start, meeting_guide_weekday, next_occurrence

UTC = dt.UTC


def test_sunday_is_day_zero():
    assert meeting_guide_weekday(dt.date(2026, 11, 22)) == 0  # a Sunday
    assert meeting_guide_weekday(dt.date(2026, 11, 21)) == 6


def test_evening_meeting_after_clocks_go_back_is_in_gmt():
    # Clocks go back on Sunday 25 October 2026: a Monday 19:30 meeting is 19:30 UTC after it.
    start = next_occurrence(1, "19:30", "Europe/London", dt.datetime(2026, 10, 24, 12, tzinfo=UTC))
    assert start.isoformat() == "2026-10-26T19:30:00+00:00"
    before = next_occurrence(1, "19:30", "Europe/London", dt.datetime(2026, 10, 17, 12, tzinfo=UTC))
    assert before.astimezone(UTC).isoformat() == "2026-10-19T18:30:00+00:00"


def test_meeting_on_the_day_clocks_go_forward():
    # 29 March 2026 01:30 does not exist in London: it is shown as 02:30 BST.
    start = next_occurrence(0, "01:30", "Europe/London", dt.datetime(2026, 3, 28, 12, tzinfo=UTC))
    assert start.isoformat() == "2026-03-29T02:30:00+01:00"
    assert start.astimezone(UTC).isoformat() == "2026-03-29T01:30:00+00:00"


def test_later_today_or_next_week():
    now = dt.datetime(2026, 11, 23, 18, 0, tzinfo=UTC)  # Monday 18:00 GMT
    assert next_occurrence(1, "19:30", "Europe/London", now).date() == dt.date(2026, 11, 23)
    assert next_occurrence(1, "17:00", "Europe/London", now).date() == dt.date(2026, 11, 30)


def test_other_timezones():
    start = local_start(dt.date(2026, 7, 1), "19:00", "America/New_York")
    assert start.astimezone(UTC).hour == 23


# --- schedules that are not simply weekly (shared.meeting_time.next_meeting / occurrences) ---

import pytest  # noqa: E402

from shared.meeting_time import (  # noqa: E402
    ScheduleError,
    check_schedule,
    describe,
    describe_exception,
    next_meeting,
    occurrence_on,
    occurrences,
)


def _meeting(**values):
    return {"day": None, "time": "19:30", "end_time": None, "timezone": "Europe/London", "rrule": None,
            "dtstart": None, "exceptions": [], **values}


def _starts(meeting, after, count):
    return [o.start.isoformat() for o in occurrences(meeting, after=after, limit=count)]


def test_fortnightly_keeps_its_weeks_and_its_wall_clock_across_the_october_change():
    fortnightly = _meeting(day=2, rrule="FREQ=WEEKLY;INTERVAL=2;BYDAY=TU", dtstart=dt.date(2026, 10, 13))
    starts = _starts(fortnightly, dt.datetime(2026, 10, 1, tzinfo=UTC), 3)
    assert starts == ["2026-10-13T19:30:00+01:00", "2026-10-27T19:30:00+00:00", "2026-11-10T19:30:00+00:00"]
    # The Tuesday between is not its week.
    after_first = next_meeting(fortnightly, after=dt.datetime(2026, 10, 14, tzinfo=UTC))
    assert after_first.date == dt.date(2026, 10, 27)


def test_first_tuesday_and_last_friday_of_the_month():
    first_tuesday = _meeting(day=2, rrule="FREQ=MONTHLY;BYDAY=1TU", dtstart=dt.date(2026, 1, 6))
    dates = [o.date for o in occurrences(first_tuesday, after=dt.datetime(2026, 3, 4, tzinfo=UTC), limit=3)]
    assert dates == [dt.date(2026, 4, 7), dt.date(2026, 5, 5), dt.date(2026, 6, 2)]
    last_friday = _meeting(day=5, rrule="FREQ=MONTHLY;BYDAY=-1FR", dtstart=dt.date(2026, 1, 30), time="20:00")
    starts = _starts(last_friday, dt.datetime(2026, 2, 28, tzinfo=UTC), 2)
    # 27 March is before the clocks go forward (29 March), 24 April after: 20:00 local both times.
    assert starts == ["2026-03-27T20:00:00+00:00", "2026-04-24T20:00:00+01:00"]


def test_a_one_off_happens_once_and_then_never():
    one_off = _meeting(day=6, dtstart=dt.date(2026, 12, 12), time="11:00")
    assert next_meeting(one_off, after=dt.datetime(2026, 12, 1, tzinfo=UTC)).start.isoformat() == \
        "2026-12-12T11:00:00+00:00"
    assert next_meeting(one_off, after=dt.datetime(2026, 12, 12, 11, 0, tzinfo=UTC)) is None
    assert describe(one_off) == "One-off: Sat 12 December"


def test_a_closed_date_is_skipped_and_shown_when_asked_for():
    weekly = _meeting(day=5, exceptions=[{"date": "2026-12-25", "closed": True, "note": "Christmas"}])
    nxt = next_meeting(weekly, after=dt.datetime(2026, 12, 20, tzinfo=UTC))
    assert nxt.date == dt.date(2027, 1, 1)
    seen = list(occurrences(weekly, after=dt.datetime(2026, 12, 20, tzinfo=UTC), include_closed=True, limit=2))
    assert [(o.date, o.closed, o.note) for o in seen] == [(dt.date(2026, 12, 25), True, "Christmas"),
                                                          (dt.date(2027, 1, 1), False, None)]
    assert describe_exception({"date": "2026-12-25", "closed": True, "note": "Christmas"}) == \
        "Closed Fri 25 December: Christmas"


def test_a_changed_occurrence_starts_at_its_own_time_across_the_march_change():
    weekly = _meeting(day=0, time="19:00", exceptions=[{"date": "2026-03-29", "closed": False, "time": "17:00",
                                                        "note": "early this week"}])
    first, second = occurrences(weekly, after=dt.datetime(2026, 3, 28, tzinfo=UTC), limit=2)
    assert first.start.isoformat() == "2026-03-29T17:00:00+01:00" and first.changed and first.note == "early this week"
    assert second.start.isoformat() == "2026-04-05T19:00:00+01:00" and not second.changed


def test_closing_the_only_occurrence_leaves_no_next_one():
    one_off = _meeting(day=6, dtstart=dt.date(2026, 12, 12),
                       exceptions=[{"date": "2026-12-12", "closed": True, "note": None}])
    assert next_meeting(one_off, after=dt.datetime(2026, 12, 1, tzinfo=UTC)) is None
    assert occurrence_on(one_off, dt.date(2026, 12, 12)).closed


def test_a_plain_weekly_meeting_is_as_before():
    weekly = _meeting(day=1)
    after = dt.datetime(2026, 10, 24, 12, tzinfo=UTC)
    assert next_meeting(weekly, after=after).start == next_occurrence(1, "19:30", "Europe/London", after)
    assert describe(weekly) == "Every Monday"


def test_schedules_in_plain_english():
    assert describe(_meeting(rrule="FREQ=WEEKLY;INTERVAL=2;BYDAY=TU", dtstart=dt.date(2026, 12, 1))) == \
        "Every other Tuesday"
    assert describe(_meeting(rrule="FREQ=MONTHLY;BYDAY=1TU", dtstart=dt.date(2026, 12, 1))) == \
        "First Tuesday of the month"
    assert describe(_meeting(rrule="FREQ=MONTHLY;BYDAY=-1FR", dtstart=dt.date(2026, 12, 25))) == \
        "Last Friday of the month"
    assert describe(_meeting(rrule="FREQ=MONTHLY;INTERVAL=2;BYDAY=3WE;UNTIL=20270630", dtstart=dt.date(2026, 12, 16))) \
        == "Third Wednesday of every other month, until Wed 30 June"


def test_check_schedule_normalises_and_derives_the_day():
    assert check_schedule(day=None, time="19:00", rrule="freq=monthly;byday=tu;bysetpos=-1",
                          dtstart=dt.date(2026, 12, 29), exceptions=[]) == ("FREQ=MONTHLY;BYDAY=-1TU", 2)
    assert check_schedule(day=None, time="19:00", rrule=None, dtstart=dt.date(2026, 12, 12), exceptions=[]) == (None, 6)


@pytest.mark.parametrize(("given", "field", "words"), [
    ({"rrule": "FREQ=DAILY", "dtstart": dt.date(2026, 12, 1)}, "rrule", "FREQ must be WEEKLY"),
    ({"rrule": "FREQ=WEEKLY;BYDAY=MO,TH", "dtstart": dt.date(2026, 12, 1)}, "rrule", "one day"),
    ({"rrule": "FREQ=MONTHLY;BYDAY=TU", "dtstart": dt.date(2026, 12, 1)}, "rrule", "which week"),
    ({"rrule": "FREQ=WEEKLY;BYHOUR=3", "dtstart": dt.date(2026, 12, 1)}, "rrule", "BYHOUR cannot be used"),
    ({"rrule": "FREQ=WEEKLY;BYDAY=TU;UNTIL=20261130", "dtstart": dt.date(2026, 12, 1)}, "rrule", "never happens"),
    ({"rrule": "FREQ=WEEKLY;BYDAY=TU;UNTIL=20260231", "dtstart": dt.date(2026, 1, 1)}, "rrule", "not a real date"),
    ({"rrule": "nonsense", "dtstart": dt.date(2026, 12, 1)}, "rrule", "NAME=VALUE"),
    ({"rrule": "FREQ=WEEKLY;BYDAY=TU"}, "dtstart", "first date"),
    ({"rrule": "FREQ=WEEKLY;BYDAY=TU", "dtstart": dt.date(2026, 12, 1), "day": 3}, "day", "Tuesdays"),
    ({"day": 5, "exceptions": [{"date": dt.date(2026, 12, 24)}]}, "exceptions", "does not meet on Thu 24 December"),
])
def test_check_schedule_says_what_is_wrong(given, field, words):
    values = {"day": None, "time": "19:00", "rrule": None, "dtstart": None, "exceptions": [], **given}
    with pytest.raises(ScheduleError) as caught:
        check_schedule(**values)
    assert caught.value.field == field and words in caught.value.message


@pytest.mark.parametrize(("given", "field"), [
    ({"rrule": "FREQ=WEEKLY;BYDAY=TU;UNTIL=99991231", "dtstart": dt.date(2026, 12, 1)}, "rrule"),
    ({"rrule": "FREQ=WEEKLY;BYDAY=TU", "dtstart": dt.date(1, 1, 2)}, "dtstart"),
    ({"dtstart": dt.date(9999, 12, 31)}, "dtstart"),
    ({"day": 5, "exceptions": [{"date": dt.date(9999, 12, 31)}]}, "exceptions"),
])
def test_dates_out_of_any_meeting_range_are_refused_not_computed(given, field):
    values = {"day": None, "time": "19:00", "rrule": None, "dtstart": None, "exceptions": [], **given}
    with pytest.raises(ScheduleError) as caught:
        check_schedule(**values)
    assert caught.value.field == field and ("out of range" in caught.value.message or "between" in caught.value.message)
    assert occurrence_on(_meeting(day=5), dt.date(9999, 12, 31)) is None


def test_a_meeting_event_from_before_schedules_parses_as_weekly_and_a_new_one_carries_its_schedule():
    from shared.events import MeetingSnapshot

    old = {"slug": "monday", "name": "Monday AA", "fellowship": "aa", "day": 1, "time": "19:30",
           "timezone": "Europe/London", "types": [], "attendance_option": "in_person", "active": True}
    snapshot = MeetingSnapshot.model_validate(old)
    assert (snapshot.rrule, snapshot.dtstart, snapshot.exceptions) == (None, None, [])
    assert describe(snapshot) == "Every Monday"
    after = dt.datetime(2026, 12, 1, tzinfo=UTC)
    assert next_meeting(snapshot, after=after).date == dt.date(2026, 12, 7)
    new = MeetingSnapshot.model_validate({**old, "rrule": "FREQ=MONTHLY;BYDAY=-1MO", "dtstart": "2026-12-01",
                                          "exceptions": [{"date": "2026-12-28", "closed": True, "note": "Christmas"}]})
    again = MeetingSnapshot.model_validate_json(new.model_dump_json())
    assert again == new and describe(again) == "Last Monday of the month"
    assert next_meeting(again, after=after).date == dt.date(2027, 1, 25)  # 28 December is closed
