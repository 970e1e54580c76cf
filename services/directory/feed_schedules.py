"""A meeting's schedule in the Meeting Guide feed, beyond what the spec can say.

The spec says only a weekly ``day`` and ``time``, so a plain weekly meeting goes out exactly as
before. A meeting that is not simply weekly, or has dated closures or changes, keeps ``day``/``time``
(its weekday and usual time, what a Meeting Guide app can show) and adds (docs/SCHEDULES.md):

- ``rrule``: its RFC 5545 RRULE value, e.g. ``FREQ=MONTHLY;BYDAY=1TU``;
- ``dtstart``: the rule's first date, or a one-off meeting's date (``YYYY-MM-DD``);
- ``exceptions``: ``[{"date": "2026-12-25", "closed": true, "note": "Christmas"}, {"date": ...,
  "closed": false, "time": "18:00", "end_time": "19:00", "note": ...}]``.

The importer reads them back, so a FAMA feed imported into FAMA keeps its schedules.
"""

from __future__ import annotations

from services.directory.models import Meeting

SCHEDULE_FIELDS = ("rrule", "dtstart", "exceptions")


def schedule_export(meeting: Meeting) -> dict:
    """The extra feed fields of a meeting that is not simply weekly (none for a plain weekly one)."""
    out: dict = {}
    if meeting.rrule:
        out["rrule"] = meeting.rrule
    if meeting.dtstart is not None:
        out["dtstart"] = meeting.dtstart.isoformat()
    if meeting.exceptions:
        out["exceptions"] = [{k: v for k, v in e.items() if v is not None} for e in meeting.exceptions]
    return out


def schedule_import(row: dict) -> dict:
    """MeetingIn's schedule fields from a feed row (left to MeetingIn and the service to check)."""
    out: dict = {}
    rule, dtstart, exceptions = row.get("rrule"), row.get("dtstart"), row.get("exceptions")
    if isinstance(rule, str) and rule.strip():
        out["rrule"] = rule.strip()
    if isinstance(dtstart, str) and dtstart.strip():
        out["dtstart"] = dtstart.strip()[:10]
    if exceptions:
        out["exceptions"] = exceptions
    return out
