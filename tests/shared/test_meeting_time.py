"""Next occurrences of weekly meetings across the BST/GMT changes (Europe/London)."""

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
