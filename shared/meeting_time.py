"""When a weekly meeting happens, in its own timezone, correct across BST/GMT changes.

Part of the meeting contract (Meeting Guide: ``day`` 0-6 with Sunday = 0, ``time``
"HH:MM" local, IANA ``timezone``), used by every service that reads a meeting snapshot.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo


def parse_hhmm(value: str) -> dt.time:
    hours, minutes = value.split(":")
    return dt.time(int(hours), int(minutes))


def meeting_guide_weekday(day: dt.date) -> int:
    """Meeting Guide day number of a date (Sunday = 0)."""
    return (day.weekday() + 1) % 7


def local_start(on: dt.date, time: str, timezone: str) -> dt.datetime:
    """The aware local datetime of a meeting at ``time`` on ``on``.

    A time that does not exist that day (inside the spring-forward gap) is moved to the
    same wall-clock distance after the change, as clocks would show it.
    """
    tz = ZoneInfo(timezone)
    naive = dt.datetime.combine(on, parse_hhmm(time))
    aware = naive.replace(tzinfo=tz)
    # Round-trip through UTC normalises non-existent local times.
    return aware.astimezone(dt.UTC).astimezone(tz)


def next_occurrence(day: int, time: str, timezone: str, after: dt.datetime) -> dt.datetime:
    """The first start of a weekly meeting strictly after ``after`` (aware), in local time."""
    tz = ZoneInfo(timezone)
    local_after = after.astimezone(tz)
    start_date = local_after.date()
    for offset in range(0, 8):
        candidate_day = start_date + dt.timedelta(days=offset)
        if meeting_guide_weekday(candidate_day) != day:
            continue
        start = local_start(candidate_day, time, timezone)
        if start > after:
            return start
    raise AssertionError("unreachable: a weekday recurs within 8 days")


def next_date(day: int, time: str, timezone: str, after: dt.datetime) -> dt.date:
    return next_occurrence(day, time, timezone, after).date()
