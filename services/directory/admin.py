"""Admin pages (/admin): meetings, pilot sites, feed sources and their import runs, change requests.

Admins manage everything; a site lead manages their own site's page (host agency details and
champion) and sees the meetings linked to it. Every form carries the form token; a form with bad
fields is shown again with each problem next to its field (422) and nothing stored. The public
"report a problem with this meeting" form is here too: it files a change request admins resolve.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import ValidationError
from sqlalchemy import delete, func, or_, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from services.directory import feed_sources, feeds, service
from services.directory.admin_api import add_source
from services.directory.models import ChangeRequest, FeedSource, ImportRun, Meeting, MeetingChange, Site
from services.directory.pages import templates
from services.directory.reference import FELLOWSHIPS, TYPE_NAMES
from services.directory.runtime import runtime
from services.directory.schemas import FeedSourceIn, MeetingExceptionIn, MeetingIn, SiteIn
from shared.auth import Principal, Role
from shared.db import unit_of_work
from shared.events import utcnow
from shared.meeting_time import BYDAY, RFC_DAYS, describe, describe_exception, rule_parts
from shared.pages import DAYS, PageForbidden, check_form_token, csrf_protected, page_principal, render, require_page_roles
from shared.web import PublicRateLimit

router = APIRouter(prefix="/admin", include_in_schema=False, dependencies=[Depends(csrf_protected)])
public = APIRouter(include_in_schema=False)
SessionDep = Annotated[Session, Depends(runtime.get_session)]
Admin = Annotated[Principal, Depends(require_page_roles(Role.admin))]
AdminOrLead = Annotated[Principal, Depends(require_page_roles(Role.admin, Role.site_lead))]
PAGE_SIZE = 25

ATTENDANCE = {"in_person": "In person", "hybrid": "In person and online", "online": "Online",
              "inactive": "Not running at the moment"}
# The meeting fields the admin form edits (the rest are kept as they are).
MEETING_FIELDS = ("slug", "name", "fellowship", "day", "time", "end_time", "timezone", "types", "attendance_option",
                  "location", "formatted_address", "postcode", "latitude", "longitude", "conference_url", "notes",
                  "site_id", "booking_required")
MEETING_LABELS = {"slug": "Slug (its address in feeds, never changes)", "name": "Name", "fellowship": "Fellowship",
                  "day": "Day", "time": "Starts (HH:MM)", "end_time": "Ends (HH:MM)", "timezone": "Timezone",
                  "types": "Meeting Guide type codes, comma-separated (e.g. O, D)",
                  "attendance_option": "Attendance", "location": "Venue", "formatted_address": "Address",
                  "postcode": "Postcode", "latitude": "Latitude", "longitude": "Longitude",
                  "conference_url": "Online meeting link", "notes": "Notes", "site_id": "Pilot site (id)",
                  "booking_required": "Booking required"}
MEETING_LABELS.update({"repeat": "How often", "week": "Which week of the month (monthly)",
                       "dtstart": "First date (YYYY-MM-DD): the one date of a one-off, the first of a fortnightly",
                       "rrule": "Rule (RFC 5545 RRULE, for 'another pattern'), e.g. FREQ=MONTHLY;BYDAY=-1FR"})
REPEATS = {"weekly": "Every week", "fortnightly": "Every other week", "monthly": "Once a month, on the day above",
           "one_off": "Once only (a one-off)", "rule": "Another pattern (a rule, below)"}
WEEKS = {"1": "First", "2": "Second", "3": "Third", "4": "Fourth", "-1": "Last"}
EXCEPTION_LABELS = {"date": "Date (YYYY-MM-DD)", "what": "What happens that day", "time": "Starts that day at (HH:MM)",
                    "end_time": "Ends that day at (HH:MM)", "note": "Short public note (e.g. Christmas)"}
SITE_LABELS = {"id": "Id (lower case, never changes)", "name": "Name", "host_agency": "Host agency", "region": "Region",
               "champion_name": "Champion's name", "champion_email": "Champion's email",
               "champion_phone": "Champion's phone", "address": "Address", "postcode": "Postcode", "active": "Active"}
# What a site lead may change on their own site's page.
LEAD_SITE_FIELDS = ("host_agency", "champion_name", "champion_email", "champion_phone", "address", "postcode")
FEED_LABELS = {"id": "Source name (its meetings carry it)", "url": "Feed address (https://...)",
               "fellowship": "Fellowship of meetings that do not say", "timezone": "Timezone of meetings that do not say",
               "every_hours": "Re-import every (hours; empty: only by hand)"}
PROBLEM_KINDS = {"time": "The day or time is wrong", "place": "The place or address is wrong",
                 "closed": "It no longer meets", "online": "The online link or phone is wrong",
                 "other": "Something else"}
RUN_STATUS = {"applied": "Applied", "held": "Held: waiting for an admin", "failed": "Failed: nothing changed",
              "confirmed": "Confirmed by an admin", "discarded": "Discarded by an admin"}


class PageNotFound(Exception):
    def __init__(self, message: str):
        self.message = message


def setup_admin(app) -> None:
    """Add the admin pages and the public problem report to the directory app."""
    app.include_router(router)
    app.include_router(public)

    @app.exception_handler(PageNotFound)
    async def not_found(request: Request, exc: PageNotFound):
        return render(templates, request, "message.html", {"title": "Page not found", "message": exc.message,
                                                "principal": page_principal(request)}, status_code=404)


# What to say when a typed value does not have the shape a field needs.
SHAPES = {"time": "Enter a time like 19:30 (24-hour clock)", "end_time": "Enter a time like 20:30 (24-hour clock)",
          "slug": "Use lower-case letters, digits and dashes, like kendal-smart-monday",
          "id": "Use letters, digits and dashes, like kendal", "champion_email": "Enter an email address like name@example.org",
          "url": "Enter an address starting https://", "latitude": "Enter a number like 54.33 (or leave it empty)",
          "longitude": "Enter a number like -2.75 (or leave it empty)"}


def field_errors(exc: ValidationError) -> dict[str, str]:
    """Each refused field with a sentence for people (what to type), not the validator's words."""
    errors: dict[str, str] = {}
    for error in exc.errors():
        field = str(error["loc"][0]) if error.get("loc") else "form"
        kind = error.get("type", "")
        if kind in ("string_type", "missing", "string_too_short"):
            message = "Fill this in"
        elif kind in ("string_pattern_mismatch", "float_type", "float_parsing", "int_type") and field in SHAPES:
            message = SHAPES[field]
        else:
            message = str(error.get("msg", "")).removeprefix("Value error, ")
        errors.setdefault(field, message[:1].upper() + message[1:])
    return errors


async def form_of(request: Request) -> dict[str, str]:
    form = await request.form()
    return {k: v.strip() for k, v in form.items() if isinstance(v, str) and k != "csrf_token"}


def when(value: dt.datetime | None) -> str:
    return value.astimezone(dt.UTC).strftime("%d %b %Y %H:%M UTC") if value else ""


def open_requests(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(ChangeRequest).where(ChangeRequest.status == "open")) or 0


# --- the index -------------------------------------------------------------------------------

@router.get("", response_class=HTMLResponse)
def index(request: Request, session: SessionDep, principal: AdminOrLead):
    if principal.role == Role.site_lead:
        return RedirectResponse(f"/admin/sites/{principal.site}", status_code=303)
    held = session.scalars(select(ImportRun).where(ImportRun.status == "held").order_by(ImportRun.id)).all()
    return render(templates, request, "admin_index.html", {
        "title": "Administration", "principal": principal, "held": held, "open_requests": open_requests(session),
        "counts": {"meetings": session.scalar(select(func.count()).select_from(Meeting).where(Meeting.active.is_(True))),
                   "sites": session.scalar(select(func.count()).select_from(Site)),
                   "feeds": session.scalar(select(func.count()).select_from(FeedSource))}})


# --- meetings --------------------------------------------------------------------------------

@router.get("/meetings", response_class=HTMLResponse)
def meetings(request: Request, session: SessionDep, principal: Admin, q: str = "", page: str = "1"):
    query = select(Meeting)
    if q.strip():
        like = f"%{q.strip()[:100].lower()}%"
        query = query.where(or_(func.lower(Meeting.name).like(like), Meeting.slug.like(like),
                                func.lower(func.coalesce(Meeting.source, "")).like(like)))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    pages = max(1, -(-total // PAGE_SIZE))
    page_no = min(int(page) if page.isdigit() and int(page) > 0 else 1, pages)
    rows = session.scalars(query.order_by(Meeting.active.desc(), Meeting.name).limit(PAGE_SIZE)
                           .offset((page_no - 1) * PAGE_SIZE)).all()
    return render(templates, request, "admin_meetings.html", {
        "title": "Meetings", "principal": principal, "rows": rows, "q": q[:100], "total": total, "page": page_no,
        "pages": pages, "days": DAYS,
        "prev_url": f"?{urlencode({'q': q, 'page': page_no - 1})}" if page_no > 1 else None,
        "next_url": f"?{urlencode({'q': q, 'page': page_no + 1})}" if page_no < pages else None})


def meeting_form_values(meeting: Meeting | None) -> dict[str, str]:
    if meeting is None:
        return {"timezone": "Europe/London", "attendance_option": "in_person", "fellowship": "aa"}
    values = service.meeting_in_of(meeting)
    out = {k: ("" if values.get(k) is None else str(values[k])) for k in MEETING_FIELDS}
    out["types"] = ", ".join(values.get("types") or [])
    out["booking_required"] = "yes" if values.get("booking_required") else ""
    return {**out, **schedule_form_values(values)}


def schedule_form_values(values: dict) -> dict[str, str]:
    """The form's "how often" choices for a stored schedule (a rule the choices cannot say: "another pattern")."""
    rule, dtstart = values.get("rrule"), values.get("dtstart")
    out = {"repeat": "weekly", "week": "1", "dtstart": "" if dtstart is None else str(dtstart), "rrule": rule or ""}
    if not rule:
        out["repeat"] = "one_off" if dtstart else "weekly"
        return out
    parts = rule_parts(rule)
    monthly = BYDAY.match(parts.get("BYDAY", ""))
    if parts.keys() == {"FREQ", "INTERVAL", "BYDAY"} and parts["FREQ"] == "WEEKLY" and parts["INTERVAL"] == "2":
        out["repeat"] = "fortnightly"
    elif parts.keys() == {"FREQ", "BYDAY"} and parts["FREQ"] == "MONTHLY" and monthly and monthly.group(1) in WEEKS:
        out.update(repeat="monthly", week=monthly.group(1))
    else:
        out["repeat"] = "rule"
    return out


def schedule_from(form: dict[str, str], data: dict) -> None:
    """The form's "how often" as a rule and first date (MeetingIn's rrule and dtstart)."""
    repeat, dtstart = form.get("repeat", "weekly"), form.get("dtstart", "")
    day = data.get("day")
    weekday = RFC_DAYS[day] if isinstance(day, int) and 0 <= day <= 6 else None
    data["dtstart"] = dtstart or None
    data["rrule"] = None
    if repeat == "fortnightly":
        if not dtstart:
            raise service.InvalidInput("dtstart", "Give the first date: an every-other-week meeting counts its weeks "
                                                  "from it")
        data["rrule"] = "FREQ=WEEKLY;INTERVAL=2" + (f";BYDAY={weekday}" if weekday else "")
    elif repeat == "monthly":
        if weekday is None:
            raise service.InvalidInput("day", "Choose the day of the week the monthly meeting is on")
        week = form.get("week", "1")
        if week not in WEEKS:
            raise service.InvalidInput("week", "Choose which week of the month")
        data["rrule"] = f"FREQ=MONTHLY;BYDAY={week}{weekday}"
        data["dtstart"] = dtstart or utcnow().date().isoformat()
    elif repeat == "one_off":
        if not dtstart:
            raise service.InvalidInput("dtstart", "Give the date of the one-off meeting")
        data["day"] = None  # it follows from the date
    elif repeat == "rule":
        if not form.get("rrule"):
            raise service.InvalidInput("rrule", "Type the rule, or choose another 'how often'")
        data["rrule"] = form["rrule"]
    elif repeat != "weekly":
        raise service.InvalidInput("repeat", "Choose how often the meeting happens")
    else:
        data["dtstart"] = None


def meeting_in_from(form: dict[str, str], base: dict | None) -> MeetingIn:
    data = dict(base or {})
    for name in MEETING_FIELDS:
        value = form.get(name, "")
        if name == "types":
            data[name] = [t.strip() for t in value.replace(";", ",").split(",") if t.strip()]
        elif name == "booking_required":
            data[name] = value == "yes"
        elif name == "day":
            data[name] = int(value) if value.isdigit() else (value or None)
        elif name in ("latitude", "longitude") and value:
            data[name] = _number(value)
        else:
            data[name] = value or None
    if base is not None:
        data["slug"] = base["slug"]
    schedule_from(form, data)
    return MeetingIn.model_validate(data)


def _number(value: str) -> float | str:
    """A typed number as a float; anything else as typed (the model then says it is not a number)."""
    try:
        return float(value)
    except ValueError:
        return value


def meeting_page(request: Request, session: Session, principal: Principal, meeting: Meeting | None, *,
                 values: dict[str, str] | None = None, errors: dict[str, str] | None = None, notice: str = "",
                 status_code: int = 200, exception_values: dict[str, str] | None = None) -> HTMLResponse:
    history = session.scalars(select(MeetingChange).where(MeetingChange.slug == meeting.slug)
                              .order_by(MeetingChange.id.desc()).limit(100)).all() if meeting else []
    requests = session.scalars(select(ChangeRequest).where(ChangeRequest.meeting_slug == meeting.slug)
                               .order_by(ChangeRequest.id.desc()).limit(20)).all() if meeting else []
    return render(templates, request, "admin_meeting.html", {
        "title": f"{'Error: ' if errors else ''}{meeting.name if meeting else 'New meeting'}", "principal": principal,
        "meeting": meeting, "values": values if values is not None else meeting_form_values(meeting),
        "errors": errors or {}, "labels": MEETING_LABELS, "days": DAYS, "attendance": ATTENDANCE,
        "fellowships": FELLOWSHIPS, "history": [{"at": when(h.at), "by": h.by, "action": h.action, "fields": h.fields,
                                                  "reason": h.reason} for h in history],
        "requests": requests, "kinds": PROBLEM_KINDS, "notice": notice, "type_names": TYPE_NAMES,
        "repeats": REPEATS, "weeks": WEEKS, "exception_labels": EXCEPTION_LABELS,
        "exception_values": exception_values or {"exception_what": "closed"},
        "exceptions": [(e["date"], describe_exception(e)) for e in meeting.exceptions or []] if meeting else [],
        "schedule": describe(meeting) if meeting else None,
    }, status_code=status_code)


@router.get("/meetings/new", response_class=HTMLResponse)
def new_meeting(request: Request, session: SessionDep, principal: Admin):
    return meeting_page(request, session, principal, None)


@router.post("/meetings/new", response_class=HTMLResponse)
async def create_meeting(request: Request, session: SessionDep, principal: Admin):
    form = await form_of(request)
    try:
        with unit_of_work(session):
            meeting = service.create_meeting(session, meeting_in=meeting_in_from(form, None), by=principal.subject)
    except ValidationError as exc:
        return meeting_page(request, session, principal, None, values=form, errors=field_errors(exc), status_code=422)
    except (service.InvalidInput, service.MeetingExists) as exc:
        errors = {getattr(exc, "field", "slug"): str(getattr(exc, "message", exc))}
        return meeting_page(request, session, principal, None, values=form, errors=errors, status_code=422)
    return RedirectResponse(f"/admin/meetings/{meeting.slug}?notice=created", status_code=303)


def load_meeting(session: Session, slug: str) -> Meeting:
    try:
        return service.get_meeting(session, slug[:200])
    except service.NotFound as exc:
        raise PageNotFound("There is no meeting at this address.") from exc


@router.get("/meetings/{slug}", response_class=HTMLResponse)
def edit_meeting(request: Request, slug: str, session: SessionDep, principal: Admin, notice: str = ""):
    notices = {"created": "The meeting is published.", "saved": "Your changes are saved and published.",
               "unchanged": "Nothing had changed.", "withdrawn": "The meeting is withdrawn.",
               "closed": "The date is closed and published: clients with reminders for it are told.",
               "changed": "That date's change is published: reminders for it follow it.",
               "reopened": "That date is as usual again, and published."}
    return meeting_page(request, session, principal, load_meeting(session, slug), notice=notices.get(notice, ""))


@router.post("/meetings/{slug}", response_class=HTMLResponse)
async def save_meeting(request: Request, slug: str, session: SessionDep, principal: Admin):
    meeting = load_meeting(session, slug)
    form = await form_of(request)
    try:
        with unit_of_work(session):
            meeting_in = meeting_in_from(form, service.meeting_in_of(meeting))
            _meeting, changed = service.update_meeting(session, slug=meeting.slug, meeting_in=meeting_in,
                                                       by=principal.subject)
    except ValidationError as exc:
        return meeting_page(request, session, principal, meeting, values=form, errors=field_errors(exc), status_code=422)
    except (service.InvalidInput, service.Conflict) as exc:
        errors = {getattr(exc, "field", "form"): str(getattr(exc, "message", exc))}
        return meeting_page(request, session, principal, meeting, values=form, errors=errors, status_code=422)
    return RedirectResponse(f"/admin/meetings/{meeting.slug}?notice={'saved' if changed else 'unchanged'}",
                            status_code=303)


@router.post("/meetings/{slug}/exceptions", response_class=HTMLResponse)
async def add_exception(request: Request, slug: str, session: SessionDep, principal: Admin):
    """Close one date, or change that date's time or note (replacing what the date had)."""
    meeting = load_meeting(session, slug)
    form = await form_of(request)
    closed = form.get("exception_what", "closed") != "changed"
    try:
        exception_in = MeetingExceptionIn.model_validate({
            "date": form.get("exception_date", ""), "closed": closed,
            "time": None if closed else form.get("exception_time") or None,
            "end_time": None if closed else form.get("exception_end_time") or None,
            "note": form.get("exception_note") or None})
        with unit_of_work(session):
            service.set_exception(session, slug=meeting.slug, exception_in=exception_in, by=principal.subject)
    except ValidationError as exc:
        errors = {}
        for field, message in field_errors(exc).items():
            if field == "date":
                message = "Enter a real date, like 2026-12-25" if form.get("exception_date") else "Fill this in"
            elif field in ("time", "end_time"):
                message = SHAPES[field]
            errors.setdefault(f"exception_{field if field in EXCEPTION_LABELS else 'date'}", message)
        return meeting_page(request, session, principal, meeting, errors=errors, exception_values=form,
                            status_code=422)
    except service.InvalidInput as exc:
        return meeting_page(request, session, principal, meeting, errors={"exception_date": exc.message},
                            exception_values=form, status_code=422)
    return RedirectResponse(f"/admin/meetings/{meeting.slug}?notice={'closed' if closed else 'changed'}",
                            status_code=303)


@router.post("/meetings/{slug}/exceptions/{date}/remove", response_class=HTMLResponse)
def remove_exception(request: Request, slug: str, date: str, session: SessionDep, principal: Admin):
    meeting = load_meeting(session, slug)
    try:
        with unit_of_work(session):
            service.remove_exception(session, slug=meeting.slug, date=dt.date.fromisoformat(date[:10]),
                                     by=principal.subject)
    except (ValueError, service.NotFound):
        raise PageNotFound("That meeting has no closure or change on that date.") from None
    return RedirectResponse(f"/admin/meetings/{meeting.slug}?notice=reopened", status_code=303)


@router.post("/meetings/{slug}/withdraw", response_class=HTMLResponse)
async def withdraw_meeting(request: Request, slug: str, session: SessionDep, principal: Admin):
    meeting = load_meeting(session, slug)
    reason = (await form_of(request)).get("reason", "")
    if not reason or len(reason) > 500:
        return meeting_page(request, session, principal, meeting, status_code=422, errors={
            "reason": "Say why the meeting is withdrawn (500 characters at most): referrals to it will show it"})
    with unit_of_work(session):
        service.withdraw_meeting(session, slug=meeting.slug, reason=reason, by=principal.subject)
    return RedirectResponse(f"/admin/meetings/{meeting.slug}?notice=withdrawn", status_code=303)


# --- pilot sites -----------------------------------------------------------------------------

@router.get("/sites", response_class=HTMLResponse)
def sites(request: Request, session: SessionDep, principal: AdminOrLead):
    if principal.role == Role.site_lead:
        return RedirectResponse(f"/admin/sites/{principal.site}", status_code=303)
    return render(templates, request, "admin_sites.html", {"title": "Pilot sites", "principal": principal,
                                                "rows": session.scalars(select(Site).order_by(Site.region, Site.name)).all()})


def site_page(request: Request, session: Session, principal: Principal, site: Site | None, *,
              values: dict[str, str] | None = None, errors: dict[str, str] | None = None, notice: str = "",
              status_code: int = 200) -> HTMLResponse:
    if values is None:
        values = {k: ("" if v is None else str(v)) for k, v in service.site_in_of(site).items()} if site \
            else {"active": "True"}
        values["active"] = "yes" if values.get("active") == "True" else ""
    linked = session.scalars(select(Meeting).where(Meeting.site_id == site.id, Meeting.active.is_(True))
                             .order_by(Meeting.name)).all() if site else []
    editable = tuple(SITE_LABELS) if principal.role == Role.admin else LEAD_SITE_FIELDS
    return render(templates, request, "admin_site.html", {
        "title": f"{'Error: ' if errors else ''}{site.name if site else 'New pilot site'}", "principal": principal,
        "site": site, "values": values, "errors": errors or {}, "labels": SITE_LABELS, "editable": editable,
        "linked": linked, "notice": notice, "is_admin": principal.role == Role.admin}, status_code=status_code)


@router.get("/sites/new", response_class=HTMLResponse)
def new_site(request: Request, session: SessionDep, principal: Admin):
    return site_page(request, session, principal, None)


def site_in_from(form: dict[str, str], base: dict | None, fields) -> SiteIn:
    data = dict(base or {})
    for name in fields:
        data[name] = (form.get(name) == "yes") if name == "active" else (form.get(name) or None)
    if base is not None:
        data["id"] = base["id"]
    return SiteIn.model_validate(data)


@router.post("/sites/new", response_class=HTMLResponse)
async def create_site(request: Request, session: SessionDep, principal: Admin):
    form = await form_of(request)
    try:
        with unit_of_work(session):
            site = service.create_site(session, site_in=site_in_from(form, None, SITE_LABELS))
    except ValidationError as exc:
        return site_page(request, session, principal, None, values=form, errors=field_errors(exc), status_code=422)
    except service.Conflict as exc:
        return site_page(request, session, principal, None, values=form, errors={"id": str(exc)}, status_code=422)
    return RedirectResponse(f"/admin/sites/{site.id}?notice=saved", status_code=303)


def load_site(session: Session, principal: Principal, site_id: str) -> Site:
    if principal.role != Role.admin and principal.site != site_id:
        raise PageForbidden("A site lead manages their own site's page only.")
    site = session.get(Site, site_id[:64])
    if site is None:
        raise PageNotFound("There is no pilot site at this address.")
    return site


@router.get("/sites/{site_id}", response_class=HTMLResponse)
def edit_site(request: Request, site_id: str, session: SessionDep, principal: AdminOrLead, notice: str = ""):
    site = load_site(session, principal, site_id)
    return site_page(request, session, principal, site, notice="Your changes are saved." if notice == "saved" else "")


@router.post("/sites/{site_id}", response_class=HTMLResponse)
async def save_site(request: Request, site_id: str, session: SessionDep, principal: AdminOrLead):
    site = load_site(session, principal, site_id)
    form = await form_of(request)
    fields = tuple(SITE_LABELS) if principal.role == Role.admin else LEAD_SITE_FIELDS
    try:
        with unit_of_work(session):
            site_in = site_in_from(form, service.site_in_of(site), [f for f in fields if f != "id"])
            service.update_site(session, site_id=site.id, site_in=site_in)
    except ValidationError as exc:
        return site_page(request, session, principal, site, values={**form, "id": site.id},
                         errors=field_errors(exc), status_code=422)
    return RedirectResponse(f"/admin/sites/{site.id}?notice=saved", status_code=303)


# --- feed sources and import runs ------------------------------------------------------------

def feeds_page(request: Request, session: Session, principal: Principal, *, values: dict[str, str] | None = None,
               errors: dict[str, str] | None = None, status_code: int = 200) -> HTMLResponse:
    sources = session.scalars(select(FeedSource).order_by(FeedSource.id)).all()
    last = {s.id: session.scalar(select(ImportRun).where(ImportRun.source_id == s.id).order_by(ImportRun.id.desc())
                                 .limit(1)) for s in sources}
    return render(templates, request, "admin_feeds.html", {
        "title": f"{'Error: ' if errors else ''}Feed sources", "principal": principal, "sources": sources,
        "last": last, "when": when, "run_status": RUN_STATUS, "labels": FEED_LABELS, "fellowships": FELLOWSHIPS,
        "values": values or {"fellowship": "aa", "timezone": "Europe/London", "every_hours": "24"},
        "errors": errors or {}}, status_code=status_code)


@router.get("/feeds", response_class=HTMLResponse)
def feed_list(request: Request, session: SessionDep, principal: Admin):
    return feeds_page(request, session, principal)


@router.post("/feeds", response_class=HTMLResponse)
async def add_feed(request: Request, session: SessionDep, principal: Admin):
    form = await form_of(request)
    try:
        with unit_of_work(session):
            source_in = FeedSourceIn.model_validate({k: form.get(k) or None for k in FEED_LABELS}
                                                    | {"fellowship": form.get("fellowship") or "aa",
                                                       "timezone": form.get("timezone") or "Europe/London"})
            source = add_source(session, source_in=source_in, by=principal.subject)
    except ValidationError as exc:
        return feeds_page(request, session, principal, values=form, errors=field_errors(exc), status_code=422)
    except (service.InvalidInput, service.MeetingExists) as exc:
        errors = {getattr(exc, "field", "id"): str(getattr(exc, "message", exc))}
        return feeds_page(request, session, principal, values=form, errors=errors, status_code=422)
    return RedirectResponse(f"/admin/feeds/{source.id}", status_code=303)


def feed_page(request: Request, session: Session, principal: Principal, source: FeedSource, *,
              problem: str | None = None, status_code: int = 200) -> HTMLResponse:
    runs = session.scalars(select(ImportRun).where(ImportRun.source_id == source.id)
                           .order_by(ImportRun.id.desc()).limit(30)).all()
    return render(templates, request, "admin_feed.html", {
        "title": f"{'Error: ' if problem else ''}Feed source {source.id}", "principal": principal, "source": source,
        "runs": runs, "when": when, "run_status": RUN_STATUS, "problem": problem,
        "live": feed_sources.live_meetings(session, source.id)}, status_code=status_code)


def load_source(session: Session, source_id: str) -> FeedSource:
    source = session.get(FeedSource, source_id[:100])
    if source is None:
        raise PageNotFound("There is no feed source at this address.")
    return source


@router.get("/feeds/{source_id}", response_class=HTMLResponse)
def feed_detail(request: Request, source_id: str, session: SessionDep, principal: Admin):
    return feed_page(request, session, principal, load_source(session, source_id))


@router.post("/feeds/{source_id}/import", response_class=HTMLResponse)
async def import_feed(request: Request, source_id: str, session: SessionDep, principal: Admin):
    source = load_source(session, source_id)
    form = await request.form()
    upload = form.get("feed")
    if upload is not None and not isinstance(upload, str) and upload.filename:
        body = await upload.read()
        try:
            rows = feeds.load_feed(body)
        except feeds.FeedError as exc:
            return feed_page(request, session, principal, source, status_code=422,
                             problem=f"The file was not imported: {exc}. Nothing has changed.")
        run = await run_in_threadpool(feed_sources.import_rows, source, rows, trigger="upload", by=principal.subject)
    elif source.url:
        run = await run_in_threadpool(feed_sources.import_from_url, source, trigger="admin", by=principal.subject)
    else:
        return feed_page(request, session, principal, source, status_code=422,
                         problem="This source has no feed address: choose a file to upload.")
    return RedirectResponse(f"/admin/runs/{run.id}", status_code=303)


def load_run(session: Session, run_id: str) -> ImportRun:
    run = session.get(ImportRun, int(run_id)) if run_id.isdigit() and len(run_id) < 12 else None
    if run is None:
        raise PageNotFound("There is no import run at this address.")
    return run


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_detail(request: Request, run_id: str, session: SessionDep, principal: Admin):
    run = load_run(session, run_id)
    source = session.get(FeedSource, run.source_id)
    return render(templates, request, "admin_run.html", {"title": f"Import of {run.source_id}", "principal": principal,
                                              "run": run, "report": run.report or {}, "when": when,
                                              "run_status": RUN_STATUS,
                                              "source_timezone": source.timezone if source else None})


@router.post("/runs/{run_id}/{decision}", response_class=HTMLResponse)
def decide_run(run_id: str, decision: str, session: SessionDep, principal: Admin):
    run = load_run(session, run_id)
    session.close()
    if decision not in ("confirm", "discard"):
        raise PageForbidden("Choose to confirm or discard the import.")
    try:
        feed_sources.decide(run.id, confirm=decision == "confirm", by=principal.subject)
    except feed_sources.NothingToDecide:
        pass  # decided meanwhile (another admin, or a second click): the page shows what was decided
    return RedirectResponse(f"/admin/runs/{run.id}", status_code=303)


# --- change requests -------------------------------------------------------------------------

@router.get("/problems", response_class=HTMLResponse)
def problems(request: Request, session: SessionDep, principal: Admin, show: str = "open"):
    query = select(ChangeRequest).order_by(ChangeRequest.id.desc()).limit(200)
    if show != "all":
        query = query.where(ChangeRequest.status == "open")
    rows = session.scalars(query).all()
    names = dict(session.execute(select(Meeting.slug, Meeting.name)
                                 .where(Meeting.slug.in_({r.meeting_slug for r in rows}))).all()) if rows else {}
    return render(templates, request, "admin_problems.html", {
        "title": "Reported problems", "principal": principal, "rows": rows, "names": names, "kinds": PROBLEM_KINDS,
        "when": when, "show": show})


@router.post("/problems/{request_id}", response_class=HTMLResponse)
async def resolve_problem(request: Request, request_id: str, session: SessionDep, principal: Admin):
    form = await form_of(request)
    item = session.get(ChangeRequest, int(request_id)) if request_id.isdigit() and len(request_id) < 12 else None
    if item is None:
        raise PageNotFound("There is no reported problem at this address.")
    if item.status == "open":
        with unit_of_work(session):
            item.status = "dismissed" if form.get("decision") == "dismiss" else "resolved"
            item.resolution = form.get("resolution", "")[:1000] or None
            item.resolved_by, item.resolved_at = principal.subject, utcnow()
    return RedirectResponse("/admin/problems", status_code=303)


def prune_closed_requests(now: dt.datetime | None = None) -> int:
    """The scheduler's job: delete reported problems closed longer ago than the retention period."""
    cutoff = (now or utcnow()) - dt.timedelta(days=runtime.settings.change_request_retention_days)
    with runtime.transaction() as session:
        return session.execute(delete(ChangeRequest).where(ChangeRequest.status != "open",
                                                           ChangeRequest.resolved_at < cutoff)).rowcount


# --- "report a problem with this meeting" (public) --------------------------------------------

def problem_page(request: Request, meeting: Meeting, *, values: dict[str, str] | None = None,
                 errors: dict[str, str] | None = None, status_code: int = 200) -> HTMLResponse:
    return render(templates, request, "problem.html", {
        "title": f"{'Error: ' if errors else ''}Report a problem with {meeting.name}",
        "principal": page_principal(request), "meeting": meeting, "kinds": PROBLEM_KINDS, "values": values or {},
        "errors": errors or {}}, status_code=status_code)


def _public_meeting(session: Session, slug: str) -> Meeting:
    meeting = session.scalar(select(Meeting).where(Meeting.slug == slug[:200]))
    if meeting is None:
        raise PageNotFound("There is no meeting at this address.")
    return meeting


@public.get("/meeting/{slug}/problem", response_class=HTMLResponse, dependencies=[PublicRateLimit])
def problem_form(request: Request, slug: str, session: SessionDep):
    return problem_page(request, _public_meeting(session, slug))


@public.post("/meeting/{slug}/problem", response_class=HTMLResponse, dependencies=[PublicRateLimit])
async def report_problem(request: Request, slug: str, session: SessionDep):
    await check_form_token(request, always=True)
    meeting = _public_meeting(session, slug)
    form = await form_of(request)
    errors = {}
    if form.get("kind") not in PROBLEM_KINDS:
        errors["kind"] = "Choose what is wrong"
    if not form.get("description"):
        errors["description"] = "Say what is wrong, for example the new day and time"
    elif len(form["description"]) > 1000:
        errors["description"] = "Keep it to 1000 characters or fewer"
    if errors:
        return problem_page(request, meeting, values=form, errors=errors, status_code=422)
    principal = page_principal(request)
    with unit_of_work(session):
        session.add(ChangeRequest(meeting_slug=meeting.slug, at=utcnow(), kind=form["kind"],
                                  description=form["description"],
                                  reported_by=principal.subject if principal else "public", status="open"))
    return render(templates, request, "message.html", {
        "title": "Thank you", "principal": principal,
        "message": "Your report has been sent to the people who keep this directory up to date. They will check it "
                   "and correct the meeting.",
        "link": {"href": f"/meeting/{meeting.slug}", "text": "Back to the meeting"}})
