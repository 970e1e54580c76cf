"""When a meeting happens, in its own timezone, correct across BST/GMT changes.

Part of the meeting contract, used by every service that reads a meeting snapshot. A meeting
is weekly on its Meeting Guide ``day`` (0-6, Sunday = 0) at ``time`` ("HH:MM" local, IANA
``timezone``) unless it has a schedule, modelled on RFC 5545 (as HSDS's schedules are):

- ``rrule``: an RRULE value such as ``FREQ=WEEKLY;INTERVAL=2;BYDAY=TU`` (every other Tuesday)
  or ``FREQ=MONTHLY;BYDAY=-1FR`` (last Friday of the month), anchored on ``dtstart``, the
  date of the first occurrence (fortnightly weeks count from it);
- ``dtstart`` alone (no rule): a one-off meeting on that date;
- ``exceptions``: dated changes to single occurrences (RFC 5545's EXDATE and changed
  instances): ``{"date", "closed": true, "note"}`` or ``{"date", "time", "end_time", "note"}``.

Every occurrence falls on the meeting's ``day`` (``check_schedule`` refuses rules that do not),
so a day-of-the-week filter stays a plain column filter. The recurrence itself is python-dateutil's
``rrule``, computed on the local wall clock, then placed in the timezone.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from dateutil.rrule import rrule, rrulestr

DAY_NAMES = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
RFC_DAYS = ("SU", "MO", "TU", "WE", "TH", "FR", "SA")  # in Meeting Guide order, Sunday = 0
ORDINALS = {1: "First", 2: "Second", 3: "Third", 4: "Fourth", 5: "Fifth", -1: "Last", -2: "Second to last"}
# RRULE parts a meeting's schedule may use: enough for fortnightly, monthly by weekday and an end.
RULE_PARTS = frozenset({"FREQ", "INTERVAL", "BYDAY", "BYSETPOS", "UNTIL", "COUNT", "WKST"})
SEARCH_YEARS = 5  # a schedule whose next occurrence is further away than this is treated as ended
# Dates a schedule may use (a rule's first date, UNTIL, an exception's date): far enough for any meeting.
FIRST_DATE, LAST_DATE = dt.date(1970, 1, 1), dt.date(2200, 12, 31)


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
    """The first start of a plain weekly meeting strictly after ``after`` (aware), in local time.

    Callers with a meeting (which may have a schedule) use ``next_meeting`` instead."""
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


# --- schedules ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Occurrence:
    """One dated occurrence of a meeting: its local start, and whether it is closed or changed."""

    date: dt.date
    start: dt.datetime  # aware, in the meeting's timezone (the usual time when closed)
    end_time: str | None = None
    closed: bool = False
    changed: bool = False  # another start time or a note for this date only
    note: str | None = None


def _get(obj: Any, name: str, default=None):
    return obj.get(name, default) if isinstance(obj, dict) else getattr(obj, name, default)


def _as_date(value) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))


def exceptions_of(meeting: Any) -> dict[dt.date, dict]:
    """The meeting's dated exceptions by date, as plain dicts (from ORM JSON or snapshot models)."""
    out = {}
    for item in _get(meeting, "exceptions") or ():
        data = item if isinstance(item, dict) else item.model_dump()
        out[_as_date(data["date"])] = data
    return out


def is_regular(meeting: Any) -> bool:
    """A plain weekly meeting: no rule, no one-off date, no dated exceptions."""
    return not (_get(meeting, "rrule") or _get(meeting, "dtstart") or _get(meeting, "exceptions"))


@functools.lru_cache(maxsize=4096)
def _rule(rule: str, dtstart: dt.date) -> rrule:
    return rrulestr(rule, dtstart=dt.datetime.combine(dtstart, dt.time(0, 0)), ignoretz=True)


def _dates_from(meeting: Any, first: dt.date):
    """The meeting's scheduled dates on or after ``first``, in order (closures included)."""
    rule, dtstart, day = _get(meeting, "rrule"), _get(meeting, "dtstart"), _get(meeting, "day")
    if dtstart is not None:
        dtstart = _as_date(dtstart)
    if rule:
        limit = dt.datetime.combine(min(first, LAST_DATE) + dt.timedelta(days=366 * SEARCH_YEARS), dt.time(0, 0))
        for when in _rule(rule, dtstart).xafter(dt.datetime.combine(first, dt.time(0, 0)), inc=True):
            if when > limit:
                return
            yield when.date()
        return
    if dtstart is not None:  # one-off
        if dtstart >= first:
            yield dtstart
        return
    if day is None:
        return
    date = first + dt.timedelta(days=(day - meeting_guide_weekday(first)) % 7)
    for _ in range(53 * SEARCH_YEARS):
        if date > LAST_DATE:
            return
        yield date
        date += dt.timedelta(days=7)


def occurrences(meeting: Any, *, after: dt.datetime, before: dt.datetime | None = None,
                include_closed: bool = False, limit: int | None = None):
    """The meeting's occurrences starting strictly after ``after`` (and before ``before``), in order.

    ``meeting`` is anything with the contract's attributes (a snapshot, a directory row, a dict).
    Closed dates are left out unless ``include_closed``. Appointment-only meetings have none.
    """
    time, timezone = _get(meeting, "time"), _get(meeting, "timezone") or "Europe/London"
    if not time:
        return
    changes = exceptions_of(meeting)
    tz = ZoneInfo(timezone)
    first = after.astimezone(tz).date()
    last = before.astimezone(tz).date() + dt.timedelta(days=1) if before is not None else None
    found = 0
    for date in _dates_from(meeting, first):
        change = changes.get(date)
        if change and not change.get("closed") and change.get("time"):
            start = local_start(date, change["time"], timezone)
        else:
            start = local_start(date, time, timezone)
        if last is not None and date > last:
            return
        if start <= after or (before is not None and start >= before):
            continue
        closed = bool(change and change.get("closed"))
        if closed and not include_closed:
            continue
        yield Occurrence(date=date, start=start, closed=closed, changed=bool(change) and not closed,
                         note=change.get("note") if change else None,
                         end_time=(change.get("end_time") if change and not closed else None)
                         or _get(meeting, "end_time"))
        found += 1
        if limit is not None and found >= limit:
            return


def next_meeting(meeting: Any, *, after: dt.datetime) -> Occurrence | None:
    """The meeting's first open occurrence starting strictly after ``after`` (None: no more, or by appointment)."""
    if is_regular(meeting):
        day, time = _get(meeting, "day"), _get(meeting, "time")
        if day is None or not time:
            return None
        start = next_occurrence(day, time, _get(meeting, "timezone") or "Europe/London", after)
        return Occurrence(date=start.date(), start=start, end_time=_get(meeting, "end_time"))
    key = _schedule_key(meeting)
    if key is None:
        return None
    coming = _upcoming(key, after.astimezone(ZoneInfo(key[3])).date())
    found = next((o for o in coming if o.start > after and not o.closed), None)
    if found is not None or len(coming) < UPCOMING:
        return found
    return next(occurrences(meeting, after=after, limit=1), None)  # a long run of closed dates


# How many occurrences from a date are kept per schedule: search asks each scheduled meeting's next one
# on every request, and python-dateutil takes a fraction of a millisecond to say it.
UPCOMING = 6


def _schedule_key(meeting: Any) -> tuple | None:
    """What a meeting's occurrences depend on, hashable."""
    time = _get(meeting, "time")
    if not time:
        return None
    dtstart = _get(meeting, "dtstart")
    changes = tuple(sorted((str(d), bool(c.get("closed")), c.get("time"), c.get("end_time"), c.get("note"))
                           for d, c in exceptions_of(meeting).items()))
    return (_get(meeting, "day"), time, _get(meeting, "end_time"), _get(meeting, "timezone") or "Europe/London",
            _get(meeting, "rrule"), None if dtstart is None else _as_date(dtstart), changes)


@functools.lru_cache(maxsize=16384)
def _upcoming(key: tuple, first: dt.date) -> tuple[Occurrence, ...]:
    """The first ``UPCOMING`` occurrences (closed ones included) dated ``first`` or later."""
    day, time, end_time, timezone, rule, dtstart, changes = key
    meeting = {"day": day, "time": time, "end_time": end_time, "timezone": timezone, "rrule": rule,
               "dtstart": dtstart, "exceptions": [{"date": d, "closed": closed, "time": t, "end_time": e, "note": n}
                                                  for d, closed, t, e, n in changes]}
    midnight = dt.datetime.combine(first, dt.time(0, 0), ZoneInfo(timezone)) - dt.timedelta(seconds=1)
    return tuple(occurrences(meeting, after=midnight, include_closed=True, limit=UPCOMING))


def closures_before(meeting: Any, *, after: dt.datetime, until: dt.datetime) -> list[Occurrence]:
    """Closed occurrences after ``after`` and before ``until`` (the ones a next occurrence skips)."""
    if not _get(meeting, "exceptions"):
        return []
    return [o for o in occurrences(meeting, after=after, before=until, include_closed=True) if o.closed]


def occurrence_on(meeting: Any, date: dt.date) -> Occurrence | None:
    """The meeting's occurrence on ``date`` (closed or not), None when it does not meet that day."""
    if not FIRST_DATE <= date <= LAST_DATE:
        return None
    key = _schedule_key(meeting)
    if key is None:
        return None
    coming = _upcoming(key, date)
    return coming[0] if coming and coming[0].date == date else None


def ics_lines(meeting: Any) -> dict[str, Any]:
    """RFC 5545 recurrence of the meeting for an iCalendar VEVENT: its first DTSTART date,
    an RRULE (plain weekly: FREQ=WEEKLY;BYDAY=..) and the closed dates as EXDATE."""
    rule = _get(meeting, "rrule")
    dtstart = _get(meeting, "dtstart")
    day = _get(meeting, "day")
    out: dict[str, Any] = {"rrule": None, "exdates": []}
    if rule:
        out["rrule"] = rule
    elif dtstart is None and day is not None:
        out["rrule"] = f"FREQ=WEEKLY;BYDAY={RFC_DAYS[day]}"
    out["exdates"] = sorted(d for d, c in exceptions_of(meeting).items() if c.get("closed"))
    out["changed"] = sorted(d for d, c in exceptions_of(meeting).items() if not c.get("closed"))
    return out


# --- checking and saying a schedule ---------------------------------------------------------

BYDAY = re.compile(r"^([+-]?[1-5])?(SU|MO|TU|WE|TH|FR|SA)$")


def rule_parts(rule: str) -> dict[str, str]:
    """An RRULE value's parts ("FREQ=MONTHLY;BYDAY=1TU" -> {"FREQ": "MONTHLY", "BYDAY": "1TU"})."""
    parts = {}
    for piece in rule.strip().removeprefix("RRULE:").split(";"):
        if not piece.strip():
            continue
        name, sep, value = piece.partition("=")
        if not sep or not value.strip():
            raise ValueError(f"{piece!r} is not NAME=VALUE")
        name = name.strip().upper()
        if name in parts:
            raise ValueError(f"{name} is given twice")
        parts[name] = value.strip().upper()
    return parts


def normal_rule(rule: str) -> str:
    """The rule checked and written the one way FAMA stores it; ValueError saying what is wrong."""
    parts = rule_parts(rule)
    unknown = sorted(set(parts) - RULE_PARTS)
    if unknown:
        raise ValueError(f"{', '.join(unknown)} cannot be used: a meeting's rule may use only "
                         f"{', '.join(sorted(RULE_PARTS))}")
    freq = parts.get("FREQ")
    if freq not in ("WEEKLY", "MONTHLY"):
        raise ValueError("FREQ must be WEEKLY (e.g. every other week) or MONTHLY (e.g. the first Tuesday)")
    if "INTERVAL" in parts and not (parts["INTERVAL"].isdigit() and 1 <= int(parts["INTERVAL"]) <= 12):
        raise ValueError("INTERVAL must be a whole number from 1 to 12")
    if "COUNT" in parts and not (parts["COUNT"].isdigit() and 1 <= int(parts["COUNT"]) <= 500):
        raise ValueError("COUNT must be a whole number from 1 to 500")
    if "COUNT" in parts and "UNTIL" in parts:
        raise ValueError("give COUNT or UNTIL, not both")
    byday = [d for d in parts.get("BYDAY", "").split(",") if d]
    if len(byday) > 1:
        raise ValueError("BYDAY must be one day: a meeting on several days is one meeting per day")
    if byday and not BYDAY.match(byday[0]):
        raise ValueError(f"BYDAY {byday[0]!r} is not a day such as TU, 1TU (first Tuesday) or -1FR (last Friday)")
    if freq == "WEEKLY" and byday and BYDAY.match(byday[0]).group(1):
        raise ValueError("a weekly rule's BYDAY is a plain day such as TU (no number before it)")
    if freq == "MONTHLY":
        if not byday:
            raise ValueError("a monthly rule needs BYDAY, e.g. 1TU (first Tuesday) or -1FR (last Friday)")
        ordinal = BYDAY.match(byday[0]).group(1)
        setpos = parts.get("BYSETPOS")
        if ordinal and setpos:
            raise ValueError("give the week in BYDAY (1TU) or in BYSETPOS, not both")
        if setpos is not None:
            if not re.match(r"^[+-]?[1-5]$", setpos):
                raise ValueError("BYSETPOS must be one of 1-5 or -1..-5")
            parts["BYDAY"] = f"{int(setpos)}{byday[0]}"
            del parts["BYSETPOS"]
        elif not ordinal:
            raise ValueError("a monthly rule says which week: BYDAY=1TU (first Tuesday), -1FR (last Friday)")
        else:
            parts["BYDAY"] = f"{int(ordinal)}{BYDAY.match(byday[0]).group(2)}"
    elif "BYSETPOS" in parts:
        raise ValueError("BYSETPOS is only for monthly rules")
    if "UNTIL" in parts:
        until = parts["UNTIL"]
        if not re.match(r"^\d{8}(T\d{6}Z?)?$", until):
            raise ValueError("UNTIL must be a date as YYYYMMDD")
        try:
            last = dt.date(int(until[:4]), int(until[4:6]), int(until[6:8]))
        except ValueError as exc:
            raise ValueError(f"UNTIL {until[:8]} is not a real date") from exc
        if not FIRST_DATE <= last <= LAST_DATE:
            raise ValueError(f"UNTIL must be between {FIRST_DATE.year} and {LAST_DATE.year}")
        parts["UNTIL"] = until[:8]
    if parts.get("INTERVAL") == "1":
        del parts["INTERVAL"]
    order = ("FREQ", "INTERVAL", "BYDAY", "UNTIL", "COUNT", "WKST")
    return ";".join(f"{name}={parts[name]}" for name in order if name in parts)


def rule_weekday(rule: str, dtstart: dt.date) -> int:
    """The Meeting Guide day every occurrence of a (normal) rule falls on."""
    byday = rule_parts(rule).get("BYDAY")
    if not byday:
        return meeting_guide_weekday(dtstart)
    return RFC_DAYS.index(BYDAY.match(byday).group(2))


def check_schedule(*, day: int | None, time: str | None, rrule: str | None, dtstart: dt.date | None,
                   exceptions: list[dict]) -> tuple[str | None, int | None]:
    """(normal rule, day) of a schedule as given; ValueError(field, message) saying what is wrong.

    The day may be left out (it follows from the schedule); given, it must agree.
    """
    if rrule and dtstart is None:
        raise ScheduleError("dtstart", "a schedule rule needs its first date (dtstart, YYYY-MM-DD)")
    for field, date in [("dtstart", dtstart), *(("exceptions", e["date"]) for e in exceptions)]:
        if date is not None and not FIRST_DATE <= date <= LAST_DATE:
            raise ScheduleError(field, f"{date.isoformat()} is out of range: give a date between "
                                       f"{FIRST_DATE.year} and {LAST_DATE.year}")
    if (rrule or dtstart is not None) and not time:
        raise ScheduleError("time", "a scheduled meeting needs a start time (HH:MM)")
    if rrule:
        try:
            rrule = normal_rule(rrule)
            _rule(rrule, dtstart)
        except ValueError as exc:
            raise ScheduleError("rrule", f"not a schedule FAMA can follow: {exc}") from exc
        weekday = rule_weekday(rrule, dtstart)
        first = next(_dates_from({"rrule": rrule, "dtstart": dtstart}, dtstart), None)
        if first is None:
            raise ScheduleError("rrule", f"the rule never happens on or after {dtstart.isoformat()} "
                                         "(check UNTIL and COUNT)")
    elif dtstart is not None:
        weekday = meeting_guide_weekday(dtstart)
    else:
        weekday = day
    if day is not None and weekday is not None and day != weekday:
        raise ScheduleError("day", f"day {day} ({DAY_NAMES[day]}) does not agree with the schedule, which falls on "
                                   f"{DAY_NAMES[weekday]}s")
    schedule = {"rrule": rrule, "dtstart": dtstart, "day": weekday, "time": time}
    seen = set()
    for item in exceptions:
        date = item["date"]
        if date in seen:
            raise ScheduleError("exceptions", f"{date.isoformat()} is given twice")
        seen.add(date)
        if not time or weekday is None or not _meets_on(schedule, date):
            raise ScheduleError("exceptions", f"the meeting does not meet on {long_date(date)}, "
                                              "so that date cannot be closed or changed")
    return rrule, weekday


class ScheduleError(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


def _meets_on(schedule: dict, date: dt.date) -> bool:
    return next(_dates_from(schedule, date), None) == date


def long_date(date: dt.date) -> str:
    """"Fri 25 December"."""
    return f"{date:%a} {date.day} {date:%B}"


def last_date(meeting: Any) -> dt.date | None:
    """The last open date of a schedule that ends (a one-off, UNTIL or COUNT); None when it goes on.

    A schedule whose every date is closed ends the day before its first."""
    rule, dtstart = _get(meeting, "rrule"), _get(meeting, "dtstart")
    if dtstart is None:
        return None
    dtstart = _as_date(dtstart)
    if rule:
        parts = rule_parts(rule)
        if "UNTIL" not in parts and "COUNT" not in parts:
            return None
        dates = [d.date() for d in _rule(rule, dtstart)]
    else:
        dates = [dtstart]
    closed = {d for d, c in exceptions_of(meeting).items() if c.get("closed")}
    open_dates = [d for d in dates if d not in closed]
    return open_dates[-1] if open_dates else dtstart - dt.timedelta(days=1)


def describe(meeting: Any) -> str | None:
    """The schedule in plain English: "Every Tuesday", "Every other Tuesday", "First Tuesday of the
    month", "One-off: Sat 12 December"; None by appointment."""
    rule, dtstart, day = _get(meeting, "rrule"), _get(meeting, "dtstart"), _get(meeting, "day")
    if dtstart is not None:
        dtstart = _as_date(dtstart)
    if not rule:
        if dtstart is not None:
            return f"One-off: {long_date(dtstart)}"
        return f"Every {DAY_NAMES[day]}" if day is not None else None
    parts = rule_parts(rule)
    interval = int(parts.get("INTERVAL", "1"))
    weekday = rule_weekday(rule, dtstart)
    if parts["FREQ"] == "WEEKLY":
        text = {1: f"Every {DAY_NAMES[weekday]}", 2: f"Every other {DAY_NAMES[weekday]}"}.get(
            interval, f"Every {interval} weeks on {DAY_NAMES[weekday]}")
    else:
        ordinal = int(BYDAY.match(parts["BYDAY"]).group(1))
        which = ORDINALS.get(ordinal, f"{ordinal}th")
        month = {1: "the month", 2: "every other month"}.get(interval, f"every {interval} months")
        text = f"{which} {DAY_NAMES[weekday]} of {month}"
    if "UNTIL" in parts:
        until = parts["UNTIL"]
        text += f", until {long_date(dt.date(int(until[:4]), int(until[4:6]), int(until[6:8])))}"
    elif "COUNT" in parts:
        text += f", {parts['COUNT']} times from {long_date(dtstart)}"
    return text


def describe_exception(change: dict) -> str:
    """"Closed Fri 25 December: Christmas" or "Thu 31 December: at 18:00 (in the back room)"."""
    date = _as_date(change["date"])
    note = change.get("note")
    if change.get("closed"):
        return f"Closed {long_date(date)}" + (f": {note}" if note else "")
    text = f"{long_date(date)}:"
    if change.get("time"):
        text += f" at {change['time']}" + (f" to {change['end_time']}" if change.get("end_time") else "")
    return text + (f" ({note})" if note and change.get("time") else f" {note}" if note else "")
