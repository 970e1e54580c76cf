"""The directory's pages: "Find a meeting" (public), a meeting's page, and the engagement dashboard.

Server-rendered, no JavaScript needed. The search form is a GET form, so the query string is
the whole state and a results page can be shared or bookmarked. Bad values are explained in an
error summary and next to their field (status 422, the page still rendered). The dashboard
reads the same figures as the engagement API, from the same module (engagement.py), with the
same disclosure control for commissioners.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Annotated
from urllib.parse import parse_qsl, quote, urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from icalendar import Calendar, Event, vRecur
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.directory import charts, engagement, search, service
from services.directory.geocode import normalise_postcode
from services.directory.models import Meeting, Site
from services.directory.reference import FELLOWSHIPS, TYPE_NAMES
from services.directory.runtime import runtime
from services.directory.schemas import SearchIn
from shared.auth import Principal, Role
from shared.events import utcnow
from shared.meeting_time import (
    closures_before,
    describe,
    describe_exception,
    ics_lines,
    local_start,
    long_date,
    meeting_guide_weekday,
    occurrence_on,
    occurrences,
)
from shared.pages import DAYS, OptionalPagePrincipal, PageForbidden, clock, make_templates, parse_date, render, require_page_roles
from shared.web import PublicRateLimit

templates = make_templates(Path(__file__).parent / "templates")
router = APIRouter(include_in_schema=False)
SessionDep = Annotated[Session, Depends(runtime.get_session)]

PAGE_SIZE = 10
KM_PER_MILE = 1.609344
DAY_VALUES = {name.lower(): number for number, name in enumerate(DAYS)}
DISTANCES = ("1", "2", "5", "10", "25", "50")  # miles
DEFAULT_DISTANCE = "5"
# value -> (label, starts at or after, starts at or before)
TIMES_OF_DAY = {
    "morning": ("Morning (before 12pm)", None, "11:59"),
    "afternoon": ("Afternoon (12pm to 5pm)", "12:00", "16:59"),
    "evening": ("Evening (5pm or later)", "17:00", None),
}
ATTENDANCE_CHOICES = {"in_person": "In person (including hybrid)", "online": "Online (including hybrid)"}
ATTENDANCE_NAMES = {"in_person": "In person", "hybrid": "In person and online", "online": "Online",
                    "inactive": "Not running at the moment"}
# The two type codes people most need explained.
TYPE_EXPLAINED = {"O": "Open: anyone may go, including family and friends",
                  "C": "Closed: only for people who want to recover themselves"}
# The types people most ask for, in plain English (Meeting Guide codes).
TYPE_CHOICES = {"W": "Women only", "M": "Men only", "LGBTQ": "LGBTQ+", "X": "Wheelchair access",
                "BE": "Newcomers welcome", "Y": "Young people", "O": "Open to anyone", "C": "Closed",
                "SP": "Speaker", "D": "Discussion", "ST": "Step study", "CF": "Children welcome"}
SORTS = {"distance": "Nearest first", "soonest": "Soonest first"}
SEARCH_FIELDS = ("near", "distance", "day", "date", "time", "from", "to", "fellowship", "attendance", "type", "q",
                 "sort")
LIST_FIELDS = ("day", "type")  # may be given more than once
HAPPENING = {"in_progress": "In progress now", "starting_soon": "Starting soon"}
CLOCK = re.compile(r"^(\d{1,2})(?:[:.](\d{2}))?\s*(am|pm)?$", re.I)


# --- words and times -------------------------------------------------------------------

def when_next(start: dt.datetime) -> str:
    """Tuesday 24 November, 2:00pm (the meeting's local time)."""
    return f"{DAYS[(start.weekday() + 1) % 7]} {start.day} {start:%B}, {clock(start)}"


def schedule(meeting: Meeting) -> str:
    """Every Tuesday, 2:00pm to 3:30pm; Every other Tuesday, ...; First Tuesday of the month, ...;
    One-off: Sat 12 December, ..."""
    if meeting.day is None or meeting.time is None:
        return "By appointment"
    text = f"{describe(meeting)}, {clock(dt.time.fromisoformat(meeting.time))}"
    if meeting.end_time:
        text += f" to {clock(dt.time.fromisoformat(meeting.end_time))}"
    return text


def closures_view(meeting: Meeting, start: dt.datetime | None, now: dt.datetime) -> dict:
    """The dated closures and changes to show: those the next meeting skips ("Closed Fri 25 December:
    Christmas — next Fri 1 January"), that next one's own change, and those still to come."""
    skipped = closures_before(meeting, after=now, until=start) if start and meeting.exceptions else []
    today = now.astimezone(search.SORT_ZONE).date()
    coming = [describe_exception(e) for e in meeting.exceptions or [] if e["date"] >= today.isoformat()]
    return {"skipped": [describe_exception({"date": c.date, "closed": True, "note": c.note}) for c in skipped],
            "coming": coming}


def miles(distance_km: float | None) -> str | None:
    if distance_km is None:
        return None
    value = distance_km / KM_PER_MILE
    return "less than 0.1 miles" if value < 0.1 else f"{value:.1f} miles"


def parse_clock(value: str) -> str | None:
    """'18:00', '6pm', '6:30 PM', '0930' -> 'HH:MM'; None if it is not a time of day."""
    value = value.strip()
    if re.fullmatch(r"\d{4}", value):
        value = f"{value[:2]}:{value[2:]}"
    match = CLOCK.match(value)
    if not match:
        return None
    hour, minute, half = int(match.group(1)), int(match.group(2) or 0), (match.group(3) or "").lower()
    if half:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if half == "pm" else 0)
    if hour > 23 or minute > 59:
        return None
    return f"{hour:02d}:{minute:02d}"


def address_of(meeting: Meeting) -> str | None:
    """The address, without the venue's name when the address starts with it."""
    address = meeting.formatted_address or ", ".join(
        p for p in (meeting.address, meeting.city, meeting.postcode or meeting.postal_code) if p)
    if address and meeting.location and address.startswith(meeting.location + ", "):
        address = address[len(meeting.location) + 2:]
    return address or None


def meeting_view(meeting: Meeting, distance_km: float | None = None, now: dt.datetime | None = None) -> dict:
    """What a person needs to know about a meeting, in plain English."""
    occurrence = search.next_of(meeting, now) if meeting.active else None
    start = occurrence.start if occurrence else None
    online = meeting.attendance_option in ("online", "hybrid")
    return {
        "exceptions": closures_view(meeting, start, now or utcnow()),
        "next_note": occurrence.note if occurrence else None,
        "ended": meeting.active and meeting.time is not None and occurrence is None,
        "slug": meeting.slug,
        "name": meeting.name,
        "fellowship": FELLOWSHIPS.get(meeting.fellowship, meeting.fellowship),
        "schedule": schedule(meeting),
        "next": when_next(start) if start else None,
        "next_iso": start.isoformat() if start else None,
        "distance": miles(distance_km),
        "attendance": ATTENDANCE_NAMES.get(meeting.attendance_option, meeting.attendance_option),
        "in_person": meeting.attendance_option in ("in_person", "hybrid"),
        "venue": meeting.location if meeting.attendance_option != "online" else None,
        "address": address_of(meeting) if meeting.attendance_option != "online" else None,
        "types": [TYPE_EXPLAINED.get(t, TYPE_NAMES[t]) for t in meeting.types if t in TYPE_NAMES],
        "joining": {"url": meeting.conference_url, "url_notes": meeting.conference_url_notes,
                    "phone": meeting.conference_phone, "phone_notes": meeting.conference_phone_notes}
        if online and (meeting.conference_url or meeting.conference_phone) else None,
        "approximate": meeting.approximate,
        "booking_required": meeting.booking_required,
        "happening": HAPPENING.get(search.happening(meeting, now or utcnow())) if start else None,
    }


# --- find a meeting ----------------------------------------------------------------------

def read_search(params) -> tuple[dict, dict[str, str], dict]:
    """The form's values as typed, the errors by field, and the search filters understood."""
    values: dict = {name: params.get(name, "").strip()[:80] for name in SEARCH_FIELDS if name not in LIST_FIELDS}
    for name in LIST_FIELDS:
        values[name] = [v.strip()[:20] for v in params.getlist(name) if v.strip()][:12]
    values["distance"] = values["distance"] or DEFAULT_DISTANCE
    errors: dict[str, str] = {}
    near = values["near"]
    if near and normalise_postcode(near):
        values["near"] = normalise_postcode(near)
    if values["distance"] not in DISTANCES:
        errors["distance"] = "Choose a distance from the list"
    days = [d.lower() for d in values["day"]]
    if any(d not in DAY_VALUES for d in days):
        errors["day"] = "Choose a day from the list"
    on_date = None
    if values["date"]:
        try:
            on_date = dt.date.fromisoformat(values["date"])
        except ValueError:
            errors["date"] = "Enter a real date, like 2026-12-24"
        else:
            if on_date < utcnow().astimezone(search.SORT_ZONE).date():
                errors["date"] = "That date has passed: enter today or a later date"
            elif days:
                errors["date"] = "Choose days of the week or a date, not both"
    if values["time"] and values["time"] not in TIMES_OF_DAY:
        errors["time"] = "Choose morning, afternoon, evening or any time"
    after = before = None
    for name, what in (("from", "start"), ("to", "end")):
        if values[name]:
            parsed = parse_clock(values[name])
            if parsed is None:
                errors[name] = f"Enter the {what} of the time range as a time, like 18:00 or 6pm"
            values[name] = parsed or values[name]
    if values["time"] in TIMES_OF_DAY:
        _label, after, before = TIMES_OF_DAY[values["time"]]
    if "from" not in errors and values["from"]:
        after = max(after or "00:00", values["from"])
    if "to" not in errors and values["to"]:
        before = min(before or "23:59", values["to"])
    if not errors.keys() & {"from", "to", "time"} and after and before and after > before:
        if values["from"] and values["to"] and values["from"] > values["to"]:
            errors["to"] = "The end of the time range must be later than its start"
        else:
            errors["time"] = "No time is both in that time of day and in the time range: change one of them"
    if values["fellowship"] and values["fellowship"] not in FELLOWSHIPS:
        errors["fellowship"] = "Choose a fellowship from the list"
    if values["attendance"] and values["attendance"] not in ATTENDANCE_CHOICES:
        errors["attendance"] = "Choose in person, online or either"
    if any(t not in TYPE_CHOICES for t in values["type"]):
        errors["type"] = "Choose the type of meeting from the list"
    if params.get("q") is not None and len(params.get("q", "").strip()) > 80:
        errors["q"] = "Enter 80 characters or fewer to search for"
    elif values["q"] and not any(ch.isalnum() for ch in values["q"]):
        errors["q"] = "Enter words or numbers to search for, like a venue or street name"
    if values["sort"] and values["sort"] not in SORTS:
        errors["sort"] = "Choose nearest first or soonest first"
    sort = values["sort"] if values["sort"] in SORTS else None
    filters = {
        "near": values["near"] or None,
        "radius_km": float(values["distance"]) * KM_PER_MILE if "distance" not in errors else 5 * KM_PER_MILE,
        "days": [meeting_guide_weekday(on_date)] if on_date else sorted({DAY_VALUES[d] for d in days if d in DAY_VALUES}),
        "now": max(utcnow(), search.start_of(on_date)) if on_date and "date" not in errors else None,
        "on_date": on_date if on_date and "date" not in errors else None,
        "starts_after": after,
        "starts_before": before,
        "fellowship": values["fellowship"] or None,
        "attendance": values["attendance"] or None,
        "types": [t for t in values["type"] if t in TYPE_CHOICES],
        "q": values["q"] or None,
        # Near a place: nearest first unless asked; otherwise soonest first (never "Sunday first").
        "sort": sort if sort and (sort != "distance" or values["near"]) else
        ("distance" if values["near"] else "soonest"),
    }
    return values, errors, filters


def near_error(near: str, exc: service.InvalidInput) -> str:
    postcode = normalise_postcode(near)
    if postcode and "unknown postcode" in exc.message:
        return f"We could not find the postcode {postcode}. Check it, or enter just the first part, like CR0"
    if "unknown place" in exc.message:
        return (f"We could not find a town, village or city called {near} in the UK. Check the spelling, "
                "or enter a postcode")
    return "Enter a UK postcode, like CR0 1AA, or a town, like Kendal"


def page_number(value: str) -> int:
    return int(value) if value.isdigit() and 0 < int(value) < 100_000 else 1


@router.get("/", response_class=HTMLResponse, dependencies=[PublicRateLimit])
def find_meeting(request: Request, session: SessionDep, principal: OptionalPagePrincipal):
    params = request.query_params
    searched = any(params.get(name) for name in SEARCH_FIELDS)
    values, errors, filters = read_search(params)
    page = page_number(params.get("page", ""))
    state = {k: v for k, v in values.items() if v and not (k == "distance" and not values["near"])}
    context = {"title": "Find a meeting", "principal": principal, "values": values, "errors": errors,
               "searched": searched, "results": [], "beyond": [], "total": 0, "days": DAYS, "distances": DISTANCES,
               "times": TIMES_OF_DAY, "attendance_choices": ATTENDANCE_CHOICES, "fellowships": FELLOWSHIPS,
               "type_choices": TYPE_CHOICES, "sorts": SORTS, "online_ignores_near": False, "online_url": None,
               "near_label": None, "near_note": None, "choices": [], "sort": filters["sort"],
               "postcode_directory": search.postcode_directory_loaded(session)}
    if searched and not errors:
        online_only = filters["attendance"] == "online"
        if online_only and filters["near"]:
            # Online meetings are not anywhere: distance means nothing for them.
            context["online_ignores_near"] = True
            filters.update(near=None, sort="soonest")
        try:
            found = _search(session, filters, page)
        except search.AmbiguousPlace as exc:
            found = None
            context["choices"] = [(choice, "/?" + urlencode({**state, "near": choice}, doseq=True))
                                  for choice in exc.choices]
        except service.InvalidInput as exc:
            field = exc.field if exc.field in SEARCH_FIELDS else "near"
            errors[field] = near_error(values["near"], exc) if field == "near" else service_message(exc)
            found = None
        if found is not None:
            pages = max(1, -(-found["total"] // PAGE_SIZE))
            if page > pages:
                page = pages
                found = _search(session, filters, page)
            now = filters["now"] or utcnow()
            near = found["near"]
            context.update(
                results=[meeting_view(m, d, now) for m, d in found["results"]], total=found["total"],
                beyond=[meeting_view(m, d, now) for m, d in found["beyond"]],
                page=page, pages=pages, first=(page - 1) * PAGE_SIZE + 1, last=min(page * PAGE_SIZE, found["total"]),
                prev_url=f"/?{urlencode({**state, 'page': page - 1}, doseq=True)}" if page > 1 else None,
                next_url=f"/?{urlencode({**state, 'page': page + 1}, doseq=True)}" if page < pages else None,
                near_label=near["resolved"] if near else None, near_note=near_note(near),
                back=urlencode({**state, **({"page": page} if page > 1 else {})}, doseq=True),
                distance_label=f"{values['distance']} mile{'s' if values['distance'] != '1' else ''}",
            )
            if filters["near"] and not filters["attendance"]:
                context["online_url"] = "/?" + urlencode({k: v for k, v in {**state, "attendance": "online"}.items()
                                                          if k not in ("near", "distance", "sort")}, doseq=True)
    if errors:
        context["title"] = "Error: Find a meeting"
    return render(templates, request, "find.html", context, status_code=422 if errors else 200)


def near_note(near: dict | None) -> str | None:
    """Say how exactly the place was placed, when it matters to the distances shown."""
    if not near:
        return None
    if near["precision"] == "district" and " " in near["resolved"]:
        outward = near["resolved"].split(" ")[0]
        return (f"Distances are from the middle of the {outward} postcode district, not from {near['resolved']} "
                "itself, so they may be out by a mile or two.")
    if near["precision"] == "place":
        return f"Distances are from the centre of {near['resolved']}."
    return None


def _search(session: Session, filters: dict, page: int) -> dict:
    search_in = SearchIn(**filters, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    return search.search_meetings(session, search_in=search_in)


def service_message(exc: service.InvalidInput) -> str:
    message = exc.message.strip()
    return message[:1].upper() + message[1:]


# --- one meeting -------------------------------------------------------------------------

def upcoming(meeting: Meeting, count: int = 4, now: dt.datetime | None = None) -> list[str]:
    """The next few occurrences, closed ones said as such."""
    out = []
    for occurrence in occurrences(meeting, after=now or utcnow(), include_closed=True, limit=count):
        if occurrence.closed:
            out.append(f"{long_date(occurrence.date)}: closed" + (f" ({occurrence.note})" if occurrence.note else ""))
        else:
            out.append(when_next(occurrence.start) + (f" ({occurrence.note})" if occurrence.note else ""))
    return out


def meeting_url(meeting: Meeting) -> str:
    return f"{runtime.settings.directory_public_url}/meeting/{quote(meeting.slug)}"


def calendar_of(meeting: Meeting, now: dt.datetime) -> bytes:
    """An iCalendar (RFC 5545) file: the meeting from its next start, in its own timezone, repeating as
    its schedule does (RRULE; none for a one-off), closed dates as EXDATE, a changed occurrence as its
    own VEVENT (RECURRENCE-ID)."""
    first = search.next_of(meeting, now) or next(occurrences(meeting, after=now, include_closed=True, limit=1))
    start = local_start(first.date, meeting.time, meeting.timezone)  # the usual time: the series' DTSTART
    recurrence = ics_lines(meeting)
    event = Event()
    event.add("uid", f"{meeting.slug}@fama-directory")
    event.add("dtstamp", now)
    event.add("summary", meeting.name)
    event.add("dtstart", start)
    event.add("dtend", start + search.length_of(meeting))
    if recurrence["rrule"]:
        event.add("rrule", vRecur.from_ical(recurrence["rrule"]))
        for date in recurrence["exdates"]:
            if date >= first.date:
                event.add("exdate", local_start(date, meeting.time, meeting.timezone))
    view = meeting_view(meeting, now=now)
    where = ", ".join(p for p in (view["venue"], view["address"]) if p)
    if where:
        event.add("location", where)
    elif meeting.conference_url:
        event.add("location", meeting.conference_url)
    lines = [f"{view['fellowship']}. {view['schedule']}.", f"Details and changes: {meeting_url(meeting)}"]
    if view["joining"]:
        lines += [f"Join online: {meeting.conference_url}"] if meeting.conference_url else []
        lines += [f"By phone: {meeting.conference_phone}"] if meeting.conference_phone else []
    event.add("description", "\n".join(lines))
    event.add("url", meeting_url(meeting))
    if meeting.latitude is not None and meeting.attendance_option != "online":
        event.add("geo", (meeting.latitude, meeting.longitude))
    calendar = Calendar()
    calendar.add("prodid", "-//FAMA//Find a meeting//EN")
    calendar.add("version", "2.0")
    calendar.add_component(event)
    for change in _changed_instances(meeting, event, first.date):
        calendar.add_component(change)
    calendar.add_missing_timezones()
    return calendar.to_ical()


def _changed_instances(meeting: Meeting, series: Event, first: dt.date) -> list[Event]:
    """A VEVENT per changed occurrence from ``first`` on, with the series' UID and a RECURRENCE-ID."""
    out = []
    for date in ics_lines(meeting)["changed"]:
        occurrence = occurrence_on(meeting, date)
        if date < first or occurrence is None or not series.get("rrule"):
            continue
        change = Event()
        change.add("uid", series["uid"])
        change.add("dtstamp", series["dtstamp"].dt)
        change.add("recurrence-id", local_start(date, meeting.time, meeting.timezone))
        change.add("summary", meeting.name)
        change.add("dtstart", occurrence.start)
        end_time = occurrence.end_time
        change.add("dtend", local_start(date, end_time, meeting.timezone) if end_time and
                   local_start(date, end_time, meeting.timezone) > occurrence.start
                   else occurrence.start + search.length_of(meeting))
        if occurrence.note:
            change.add("description", occurrence.note)
        for name in ("location", "url"):
            if series.get(name):
                change.add(name, str(series[name]))
        out.append(change)
    return out


def directions_url(meeting: Meeting) -> str | None:
    """Directions to the venue in the phone's maps (Google Maps' universal link opens the app)."""
    if meeting.attendance_option == "online":
        return None
    if meeting.latitude is not None and meeting.longitude is not None:
        destination = f"{meeting.latitude},{meeting.longitude}"
    else:
        destination = address_of(meeting) or ""
    return "https://www.google.com/maps/dir/?" + urlencode({"api": "1", "destination": destination}) \
        if destination else None


def _running(meeting: Meeting) -> bool:
    return meeting.active and meeting.attendance_option != "inactive"


def _has_dates(meeting: Meeting) -> bool:
    """Running, at a time, with dates still to come (closed ones count: a calendar shows the series)."""
    return _running(meeting) and meeting.day is not None and meeting.time is not None and \
        next(occurrences(meeting, after=utcnow(), include_closed=True, limit=1), None) is not None


@router.get("/meeting/{slug}.ics", dependencies=[PublicRateLimit])
def meeting_calendar(request: Request, slug: str, session: SessionDep, principal: OptionalPagePrincipal):
    try:
        meeting = service.get_meeting(session, slug[:200])
    except service.NotFound:
        meeting = None
    if meeting is None or not _has_dates(meeting):
        return render(templates, request, "message.html", {
            "title": "No calendar entry", "principal": principal,
            "message": "This meeting has no regular time to add to a calendar: it is not running, it is by "
                       "appointment, or its dates have all passed. Search again to find another.",
        }, status_code=404)
    return Response(calendar_of(meeting, utcnow()), media_type="text/calendar; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{meeting.slug[:80]}.ics"'})


@router.get("/meeting/{slug}", response_class=HTMLResponse, dependencies=[PublicRateLimit])
def meeting_page(request: Request, slug: str, session: SessionDep, principal: OptionalPagePrincipal, back: str = ""):
    try:
        meeting = service.get_meeting(session, slug[:200])
    except service.NotFound:
        return render(templates, request, "message.html", {
            "title": "Meeting not found", "principal": principal,
            "message": "There is no meeting at this address. It may have been removed: search again to find another.",
        }, status_code=404)
    # Back to the same results: rebuilt from known fields only, never echoed as it came.
    known = [(k, v) for k, v in parse_qsl(back[:500]) if k in (*SEARCH_FIELDS, "page")]
    return render(templates, request, "meeting.html", {
        "title": meeting.name, "principal": principal, "meeting": meeting, "view": meeting_view(meeting),
        "upcoming": upcoming(meeting) if _running(meeting) else [],
        "calendar_url": f"/meeting/{quote(meeting.slug)}.ics" if _has_dates(meeting) else None,
        "directions_url": directions_url(meeting) if _running(meeting) else None,
        "back_url": "/?" + urlencode(known) if known else "/",
        "map_url": (f"https://www.openstreetmap.org/?mlat={meeting.latitude}&mlon={meeting.longitude}"
                    f"#map=17/{meeting.latitude}/{meeting.longitude}")
        if meeting.latitude is not None and meeting.attendance_option != "online" else None,
    })


# --- the engagement dashboard -------------------------------------------------------------

METRIC_NAMES = {
    "referrals_made": "Referrals",
    "contact_arranged": "Contact arranged",
    "first_meeting_attended": "First meeting attended",
    "accompanied": "Accompanied to a meeting",
    "followed_up": "Followed up",
    "did_not_engage": "Did not engage",
    "declined": "Client declined",
    "consent_withdrawn": "Consent withdrawn",
    "reminders_sent": "Reminders sent",
    "reminders_delivered": "Reminders delivered",
    "reminders_failed": "Reminders not delivered",
    "opted_out": "Opted out (replied STOP)",
    "client_reported_attended": "Attended, as the client reported by text",
    "attendance_confirmed": "Attended, confirmed by a keyworker",
}
STAGE_COLUMNS = ("referrals_made", "contact_arranged", "first_meeting_attended", "accompanied", "followed_up",
                 "did_not_engage", "declined")
# What clients said by text, apart from what keyworkers confirmed (docs/TEXT-REPLIES.md).
ATTENDANCE_COLUMNS = ("client_reported_attended", "attendance_confirmed", "first_meeting_attended")
REMINDER_COLUMNS = ("reminders_sent", "reminders_delivered", "reminders_failed", "opted_out", "consent_withdrawn")
HEADLINES = ("referrals_made", "first_meeting_attended", "reminders_delivered", "opted_out")
FUNNEL = (("referrals_made", "Referred"), ("contact_arranged", "Contact arranged"),
          ("first_meeting_attended", "Attended"), ("followed_up", "Followed up"))
MOST_WEEKS = 52
DASHBOARD_FIELDS = ("from", "to", "fellowship", "region")

_dashboard_roles = require_page_roles(Role.commissioner, Role.admin, Role.site_lead, Role.keyworker)
DashboardPrincipal = Annotated[Principal, Depends(_dashboard_roles)]


def read_dashboard_filters(params) -> tuple[dict[str, str], dict[str, str], dict]:
    values = {name: params.get(name, "").strip()[:40] for name in DASHBOARD_FIELDS}
    errors: dict[str, str] = {}
    dates: dict[str, dt.date | None] = {}
    for name, what in (("from", "start"), ("to", "end")):
        try:
            dates[name] = parse_date(values[name])
        except ValueError:
            dates[name] = None
            errors[name] = f"Enter the {what} date as a real date, like 16/11/2026"
        if dates[name]:
            values[name] = dates[name].isoformat()
    if dates["from"] and dates["to"] and dates["from"] > dates["to"]:
        errors["to"] = "The end date must be the same as or after the start date"
    if values["fellowship"] and values["fellowship"] not in FELLOWSHIPS:
        errors["fellowship"] = "Choose a fellowship from the list"
    return values, errors, {"date_from": dates["from"], "date_to": dates["to"], "fellowship": values["fellowship"] or None}


def weekly_points(weeks: list[dict], date_from: dt.date | None, date_to: dt.date | None) -> list[dict]:
    """Every week of the period (empty weeks too), at most the last MOST_WEEKS."""
    by_week = {w["week_start"]: w["counts"] for w in weeks}
    this_week = engagement.week_start(utcnow())
    first = engagement.week_start(dt.datetime.combine(date_from, dt.time(12))) if date_from else min(by_week, default=None)
    last = engagement.week_start(dt.datetime.combine(date_to, dt.time(12))) if date_to else max(by_week, default=None)
    if first is None or last is None:
        return []
    last = min(last, max(this_week, max(by_week, default=this_week)))
    first = max(first, last - dt.timedelta(weeks=MOST_WEEKS - 1))
    out, monday = [], first
    while monday <= last:
        out.append({"week_start": monday, "counts": by_week.get(monday, dict.fromkeys(engagement.METRICS, 0))})
        monday += dt.timedelta(weeks=1)
    return out


def _largest_first(value: int | str) -> float:
    """Sort key on the figure as shown ("<5" between 0 and 5), so the order tells no more than the figures."""
    return -(0.5 if value == engagement.SMALL else value)


def dashboard_data(session: Session, scope: engagement.Scope, filters: dict) -> dict:
    data = engagement.read(session, scope=scope, **filters)
    sites = [{"id": s["site_id"], "name": s["name"] or s["site_id"], "region": s["region"] or "Region not known",
              "counts": s["counts"]} for s in data["sites"]]
    sites.sort(key=lambda s: s["name"])
    fellowships = [{"name": FELLOWSHIPS.get(f["fellowship"], f["fellowship"]), "count": f["counts"]["referrals_made"]}
                   for f in data["fellowships"] if f["counts"]["referrals_made"] != 0]
    fellowships.sort(key=lambda f: (_largest_first(f["count"]), f["name"]))
    weeks = [{"label": f"{w['week_start'].day} {w['week_start']:%b}", "long": f"{w['week_start'].day} {w['week_start']:%B %Y}",
              "counts": w["counts"]}
             for w in weekly_points(data["weeks"], filters["date_from"], filters["date_to"])]
    regions = [{"name": r["region"] or "Region not known", "counts": r["counts"]} for r in data["regions"]]
    return {
        "suppressed": data["protected"],
        "totals": data["totals"],
        "regions": [{**r, "slug": re.sub(r"[^a-z0-9]+", "-", r["name"].lower()).strip("-")} for r in regions],
        "sites": sites, "fellowships": fellowships, "weeks": weeks,
    }


def dashboard_charts(data: dict) -> dict:
    note = (" Figures are rounded to a multiple of 5; hatched bars are figures that are not zero but round to 0,"
            " shown as fewer than 5.") if data["suppressed"] else ""
    out = {}
    if data["weeks"]:
        out["trend"] = charts.column_chart(
            chart_id="chart-trend", title="Referrals each week",
            desc=f"Bar chart of referrals made in each week, from the week starting {data['weeks'][0]['long']} "
                 f"to the week starting {data['weeks'][-1]['long']}. The numbers are in the table below.{note}",
            points=[(w["label"], w["counts"]["referrals_made"]) for w in data["weeks"]])
    if data["sites"]:
        out["funnel"] = charts.bar_chart(
            chart_id="chart-funnel", title="From referral to engagement, by site",
            desc="For each site, bars for referrals made, contact arranged, first meeting attended and followed up. "
                 f"The numbers are in the table below.{note}",
            groups=[(s["name"], [(label, s["counts"][m]) for m, label in FUNNEL]) for s in data["sites"]],
            series=[label for _, label in FUNNEL])
    if data["fellowships"]:
        out["mix"] = charts.bar_chart(
            chart_id="chart-mix", title="Referrals by fellowship",
            desc=f"Bars for the number of referrals to each fellowship's meetings. The numbers are in the table below.{note}",
            groups=[(f["name"], [("Referrals", f["count"])]) for f in data["fellowships"]])
    return out


def _scope(session: Session, principal: Principal, region: str) -> engagement.Scope:
    try:
        return engagement.scope_of(session, principal, region=region if principal.role == Role.admin else "")
    except engagement.NotVisible as exc:
        raise PageForbidden(str(exc)) from exc


@router.get("/dashboard", response_class=HTMLResponse)
def dashboard(request: Request, session: SessionDep, principal: DashboardPrincipal):
    values, errors, filters = read_dashboard_filters(request.query_params)
    region = values["region"] if principal.role == Role.admin else ""
    regions = list(session.scalars(select(Site.region).distinct().order_by(Site.region))) \
        if principal.role == Role.admin else []
    if region and region not in regions:
        errors["region"] = "Choose a region from the list"
        region = ""
    scope = _scope(session, principal, region)
    state = {k: v for k, v in values.items() if v and (k != "region" or region)}
    context = {"title": "Error: Engagement dashboard" if errors else "Engagement dashboard", "principal": principal,
               "values": values, "errors": errors, "scope": scope.title, "fellowships": FELLOWSHIPS, "regions": regions,
               "metric_names": METRIC_NAMES, "stage_columns": STAGE_COLUMNS, "reminder_columns": REMINDER_COLUMNS,
               "attendance_columns": ATTENDANCE_COLUMNS,
               "headlines": HEADLINES, "funnel": FUNNEL, "data": None, "charts": {},
               "csv_url": "/dashboard/engagement.csv" + (f"?{urlencode(state)}" if state else ""),
               "filtered": bool(state), "is_admin": principal.role == Role.admin}
    if not errors:
        data = dashboard_data(session, scope, filters)
        context.update(data=data, charts=dashboard_charts(data))
    return render(templates, request, "dashboard.html", context, status_code=422 if errors else 200)


@router.get("/dashboard/engagement.csv")
def dashboard_csv(request: Request, session: SessionDep, principal: DashboardPrincipal):
    """The dashboard's counters by week, site and fellowship, for a spreadsheet (signed in by the cookie)."""
    values, errors, filters = read_dashboard_filters(request.query_params)
    if errors:
        return Response("; ".join(f"{k}: {v}" for k, v in errors.items()), status_code=422, media_type="text/plain")
    scope = _scope(session, principal, values["region"])
    data = engagement.read(session, scope=scope, **filters)
    name = "fama-engagement" + (f"-{values['from']}" if values["from"] else "") + (f"-to-{values['to']}" if values["to"] else "")
    return Response(engagement.csv_text(data), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}.csv"', "Cache-Control": "no-store"})
