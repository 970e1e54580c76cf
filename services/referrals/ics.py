"""A client's planned session as a calendar file (RFC 5545), from the desk: discreet by default.

A phone or a calendar may be shared. Unless the client opted in to full detail (the referral's
``reminder_detail``, the same choice their reminders follow), the entry is called "Your meeting"
and holds only the time, the place and how to join, each part only if ``indiscreet_words`` finds
nothing in it; never the meeting's name or fellowship, nor a link to its directory page (whose
address names it). Nothing about the client goes in: no reference, no number, no email. The UID
is derived from the referral's id (which it does not show), so downloading again after the plan
changes updates the same calendar entry instead of adding a second one.
"""

from __future__ import annotations

import datetime as dt
import uuid
from urllib.parse import quote

from icalendar import Alarm, Calendar, Event

from shared.discretion import indiscreet_words
from shared.events import FELLOWSHIP_NAMES, MeetingSnapshot
from shared.meeting_time import Occurrence, local_start, occurrence_on, parse_hhmm

DISCREET_SUMMARY = "Your meeting"
USUAL_LENGTH = dt.timedelta(hours=1)  # of a meeting whose end time is not known
ALARM_BEFORE = dt.timedelta(hours=1)
# Fixed: the UIDs of entries already in clients' calendars depend on it.
UID_NAMESPACE = uuid.UUID("5a0c6d1e-3f47-4a8e-9b1d-2c7e0f4b9a63")


def occurrence_of(*, planned_date: dt.date, meeting: MeetingSnapshot) -> Occurrence | None:
    """The meeting on the planned date as its schedule says (closed, or changed that day), if it meets then."""
    return occurrence_on(meeting, planned_date) if meeting.time else None


def session_start(*, planned_date: dt.date, meeting: MeetingSnapshot) -> dt.datetime | None:
    """The planned session's local start (aware, in the meeting's timezone): that day's own time when
    the meeting changed it; None without a time."""
    if not meeting.time:
        return None
    occurrence = occurrence_of(planned_date=planned_date, meeting=meeting)
    if occurrence is not None and not occurrence.closed:
        return occurrence.start
    return local_start(planned_date, meeting.time, meeting.timezone)


def length_of(meeting: MeetingSnapshot, occurrence: Occurrence | None = None) -> dt.timedelta:
    start_time = f"{occurrence.start:%H:%M}" if occurrence is not None and occurrence.changed else meeting.time
    end_time = (occurrence.end_time if occurrence is not None and occurrence.end_time else None) or meeting.end_time
    if not start_time or not end_time:
        return USUAL_LENGTH
    start, end = parse_hhmm(start_time), parse_hhmm(end_time)
    minutes = (end.hour * 60 + end.minute - start.hour * 60 - start.minute) % (24 * 60)
    return dt.timedelta(minutes=minutes) if minutes else USUAL_LENGTH


def _shown(text: str | None, *, full: bool) -> str | None:
    """Free text from the feed, if it may go in: always with full detail, else only if discreet."""
    return text if text and (full or not indiscreet_words(text)) else None


def place_of(meeting: MeetingSnapshot, *, full: bool) -> str | None:
    """Venue and address (or postcode), those parts that may be shown; None for an online meeting.

    In discreet mode the address goes in part by part: "Community Recovery Hub, Croydon, CR0"
    keeps "Croydon, CR0", so a telling venue name does not cost the client the street and town.
    """
    if meeting.attendance_option == "online":
        return None
    venue = _shown(meeting.location, full=full)
    address = [part.strip() for part in (meeting.formatted_address or "").split(",")]
    address = [part for part in address if _shown(part, full=full) and part != venue]
    if not address and (postcode := _shown(meeting.postcode, full=full)):
        address = [postcode]
    return ", ".join(filter(None, [venue, *address])) or None


def joining_lines(meeting: MeetingSnapshot, *, full: bool) -> list[str]:
    if meeting.attendance_option not in ("online", "hybrid"):
        return []
    lines = []
    if url := _shown(meeting.conference_url, full=full):
        notes = _shown(meeting.conference_url_notes, full=full)
        lines.append(f"Join online: {url}" + (f" ({notes})" if notes else ""))
    if phone := _shown(meeting.conference_phone, full=full):
        notes = _shown(meeting.conference_phone_notes, full=full)
        lines.append(f"By phone: {phone}" + (f" ({notes})" if notes else ""))
    return lines


def session_uid(referral_id: uuid.UUID) -> str:
    return f"{uuid.uuid5(UID_NAMESPACE, str(referral_id))}@fama-referrals"


def planned_session_calendar(*, referral_id: uuid.UUID, planned_date: dt.date, meeting: MeetingSnapshot,
                             detail: str, now: dt.datetime, directory_url: str) -> bytes:
    """The one planned session, with a reminder an hour before; ``detail`` "full" only if the client opted in."""
    start = session_start(planned_date=planned_date, meeting=meeting)
    if start is None:
        raise ValueError("a meeting by appointment has no time to put in a calendar")
    occurrence = occurrence_of(planned_date=planned_date, meeting=meeting)
    full = detail == "full"
    summary = meeting.name if full else DISCREET_SUMMARY
    place = place_of(meeting, full=full)
    joining = joining_lines(meeting, full=full)
    lines = [f"{meeting.name} ({FELLOWSHIP_NAMES.get(meeting.fellowship, meeting.fellowship)})"] if full else []
    lines += joining
    if occurrence is not None and occurrence.changed and (note := _shown(occurrence.note, full=full)):
        lines.insert(int(full), f"This week: {note}")
    if full:
        lines.append(f"Details and changes: {directory_url}/meeting/{quote(meeting.slug)}")
    if not place and meeting.attendance_option == "online" and joining:
        place = joining[0].removeprefix("Join online: ").removeprefix("By phone: ")
    if not full and indiscreet_words("\n".join([summary, place or "", *lines])):
        place, lines = None, []  # the parts together say what none said alone: the time only

    event = Event()
    event.add("uid", session_uid(referral_id))
    event.add("dtstamp", now)
    event.add("summary", summary)
    event.add("dtstart", start)
    event.add("dtend", start + length_of(meeting, occurrence))
    if place:
        event.add("location", place)
    if lines:
        event.add("description", "\n".join(lines))
    if full:
        event.add("url", f"{directory_url}/meeting/{quote(meeting.slug)}")
    if place and meeting.attendance_option != "online" and meeting.latitude is not None \
            and meeting.longitude is not None:
        event.add("geo", (meeting.latitude, meeting.longitude))
    if not full:
        event.add("class", "PRIVATE")  # shown as busy, without its details, to others sharing the calendar
    alarm = Alarm()
    alarm.add("action", "DISPLAY")
    alarm.add("description", summary)
    alarm.add("trigger", -ALARM_BEFORE)
    event.add_component(alarm)

    calendar = Calendar()
    calendar.add("prodid", "-//FAMA//Planned session//EN")
    calendar.add("version", "2.0")
    calendar.add("method", "PUBLISH")
    calendar.add_component(event)
    # The timezone's rules around the one date, not since 1970: a short file that still says BST or GMT.
    calendar.add_missing_timezones(first_date=start.date() - dt.timedelta(days=366),
                                   last_date=start.date() + dt.timedelta(days=366))
    return calendar.to_ical()
