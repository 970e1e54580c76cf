"""The keyworker's referral desk: server-rendered pages over the same service functions as the API.

Every page works without JavaScript: filters are GET forms (shareable URLs); each action is a
POST form that redirects (303) with a notice, or re-renders the page with the error next to
its field. Reminders come from the local ``referral_reminders`` view that notifications' events
build: a page never calls another service.
"""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Annotated
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import phonenumbers
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.referrals import audit, ics, service
from services.referrals.models import Referral, ReferralReminder, meeting_replica
from services.referrals.runtime import runtime
from services.referrals.schemas import ReferralIn, TransitionIn
from shared.auth import Principal, Role
from shared.db import unit_of_work
from shared.events import FELLOWSHIP_NAMES, REFERRAL_STATUSES, REMINDER_KIND_LABELS, MeetingSnapshot, Stage, utcnow
from shared.meeting_time import describe, is_regular, local_start, next_meeting, occurrence_on
from shared.pages import (
    DAYS,
    PageForbidden,
    clock,
    csrf_protected,
    make_templates,
    page_principal,
    parse_date,
    render,
    require_page_roles,
)

templates = make_templates(Path(__file__).parent / "templates")
# Every form here is refused without this browser's form token when signed in by the cookie.
router = APIRouter(prefix="/desk", include_in_schema=False, dependencies=[Depends(csrf_protected)])
SessionDep = Annotated[Session, Depends(runtime.get_session)]
LONDON = ZoneInfo("Europe/London")
PAGE_SIZE = 20

# Plain English for the words the service stores.
STAGE_NAMES = {
    Stage.information_given: "Information given",
    Stage.contact_arranged: "Contact arranged",
    Stage.first_meeting_planned: "First meeting planned",
    Stage.first_meeting_attended: "First meeting attended",
    Stage.followed_up: "Followed up",
    Stage.on_hold: "On hold",
    Stage.did_not_engage: "Did not engage",
    Stage.declined: "Client declined",
    Stage.entered_in_error: "Entered in error",
}
STATUS_NAMES = {"requested": "Requested", "accepted": "Accepted", "in-progress": "In progress",
                "completed": "Completed", "on-hold": "On hold", "failed": "Failed",
                "cancelled": "Cancelled", "entered-in-error": "Entered in error"}
# The button that moves a referral to each stage, and whether it is a warning.
ACTIONS = {
    Stage.contact_arranged: ("Mark contact arranged", "Someone (for example a peer) will meet or go with the client."),
    Stage.first_meeting_planned: ("Plan the first meeting", "The client means to go on the planned date."),
    Stage.first_meeting_attended: ("Mark first meeting attended", "The client went to the meeting."),
    Stage.followed_up: ("Mark followed up", "You followed up with the client after the meeting."),
    Stage.on_hold: ("Put on hold", "The referral pauses; you can arrange contact or plan a meeting later."),
    Stage.did_not_engage: ("Mark did not engage", "The client did not take up the referral. This ends it."),
    Stage.declined: ("Record that the client declined", "The client does not want to go. This ends the referral."),
    Stage.entered_in_error: ("Mark entered in error", "This referral was recorded by mistake. This cannot be undone."),
}
WARNING_STAGES = {Stage.did_not_engage, Stage.declined, Stage.entered_in_error}
SUPPORT_NAMES = {
    "none": "None: the client will go on their own",
    "accompanied_by_peer": "A peer supporter will go with the client",
    "accompanied_by_keyworker": "The keyworker will go with the client",
    "transport": "Transport arranged",
}
DETAIL_NAMES = {
    "discreet": "Discreet: the time and place only, no mention of the kind of meeting",
    "full": "Full: reminders may name the meeting, for example \u201cSMART Recovery\u201d",
}
REMINDER_STATUSES = {"scheduled": "Planned", "sent": "Sent", "delivered": "Delivered", "failed": "Not delivered",
                     "cancelled": "Cancelled", "held": "Held", "too-late": "Not sent: too late"}
CHANNELS = {"sms": "Text message", "email": "Email"}
HISTORY_ACTIONS = {"created": "Referral recorded", "transition": "Stage changed", "consent_withdrawn": "Consent withdrawn",
                   "contact_unreachable": "Contact details not reachable", "contact_erased": "Contact details erased"}
ATTENDANCE = {"in_person": "In person", "hybrid": "In person and online", "online": "Online", "inactive": "Not running"}
NOTICES = {
    "created": "Referral recorded.",
    "moved": "Stage changed.",
    "consent-withdrawn": "Consent withdrawn: no more reminders will be sent and the contact details have been deleted.",
}


# --- words and times -------------------------------------------------------------------

def long_date(value: dt.date) -> str:
    """Tuesday 24 November 2026."""
    return f"{DAYS[(value.weekday() + 1) % 7]} {value.day} {value:%B %Y}"


def long_datetime(value: dt.datetime | None) -> str:
    """An instant in Europe/London local time: Tuesday 24 November 2026, 2:00pm."""
    if value is None:
        return ""
    local = (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).astimezone(LONDON)
    return f"{long_date(local.date())}, {clock(local)}"


def meeting_time(meeting: MeetingSnapshot | None) -> str:
    """Tuesdays at 2:00pm; Every other Tuesday at 2:00pm; One-off: Sat 12 December at 11:00am."""
    if meeting is None or meeting.day is None:
        return "By arrangement"
    when = f"{DAYS[meeting.day]}s" if is_regular(meeting) or not describe(meeting) else describe(meeting)
    if meeting.time:
        when += f" at {clock(dt.time.fromisoformat(meeting.time))}"
    return when


def planned_when(planned: dt.date, meeting: MeetingSnapshot | None) -> str:
    """The planned first meeting: its date and, when known, its local start time."""
    if meeting is None or not meeting.time:
        return long_date(planned)
    occurrence = occurrence_on(meeting, planned)
    if occurrence is None:
        return long_datetime(local_start(planned, meeting.time, meeting.timezone))
    when = long_datetime(occurrence.start)
    if occurrence.closed:
        return f"{when} (closed that day{': ' + occurrence.note if occurrence.note else ''})"
    return f"{when} ({occurrence.note})" if occurrence.note else when


def phone(value: str | None) -> str | None:
    """+447812345678 -> 07812 345678; a masked number is shown as it is."""
    if not value or not value.startswith("+"):
        return value
    return phonenumbers.format_number(phonenumbers.parse(value, "GB"), phonenumbers.PhoneNumberFormat.NATIONAL)


def stage_name(value: str) -> str:
    return STAGE_NAMES.get(Stage(value), value) if value in Stage._value2member_map_ else value


templates.env.filters.update(phone=phone, long_date=long_date, long_datetime=long_datetime, stage_name=stage_name,
                             status_name=lambda v: STATUS_NAMES.get(v, v))


def sentence(message: str) -> str:
    """A service or pydantic message as a sentence for the page."""
    message = message.removeprefix("Value error, ").strip()
    return message[:1].upper() + message[1:] if message else message


# --- access ----------------------------------------------------------------------------

_desk_roles = require_page_roles(Role.keyworker, Role.site_lead, Role.admin)


def desk_principal(principal: Annotated[Principal, Depends(_desk_roles)]) -> Principal:
    """Keyworkers and site leads of a site, and admins; others are sent to sign in or refused."""
    if principal.role != Role.admin and not principal.site:
        raise PageForbidden("Your sign-in does not name a site, so there are no referrals to show.")
    return principal


Desk = Annotated[Principal, Depends(desk_principal)]


def load_referral(session: Session, principal: Principal, referral_id: str, *, lock: bool = False) -> Referral:
    try:
        key = uuid.UUID(referral_id)
    except ValueError:
        key = None
    referral = None
    if key is not None:
        referral = service.lock_referral(session, key) if lock else session.get(Referral, key)
    if referral is None:
        raise PageNotFound("There is no such referral. Check the link, or find it in the list of referrals.")
    if not principal.may_act_for_site(referral.site_id):
        raise PageForbidden("This referral belongs to another site.")
    return referral


class PageNotFound(Exception):
    def __init__(self, message: str):
        self.message = message


async def form_fields(request: Request) -> dict[str, str]:
    """The posted form as plain strings (files ignored): the pages parse and explain errors themselves."""
    form = await request.form()
    return {key: value.strip()[:2000] for key, value in form.items() if isinstance(value, str)}


FormFields = Annotated[dict[str, str], Depends(form_fields)]


# --- meetings from the replica ---------------------------------------------------------

def meetings_by_slug(session: Session, slugs: set[str]) -> dict[str, tuple[MeetingSnapshot, bool]]:
    if not slugs:
        return {}
    rows = session.execute(select(meeting_replica.c.snapshot, meeting_replica.c.active)
                           .where(meeting_replica.c.slug.in_(slugs))).all()
    out = {}
    for row in rows:
        meeting = MeetingSnapshot.model_validate(row.snapshot)
        out[meeting.slug] = (meeting, bool(row.active) and meeting.attendance_option != "inactive")
    return out


def meeting_choices(session: Session, *, site_id: str | None, query: str) -> list[MeetingSnapshot]:
    """Active meetings to pick from: those matching every word searched, else the site's own (else all)."""
    rows = session.scalars(select(meeting_replica.c.snapshot).where(meeting_replica.c.active.is_(True))
                           .order_by(meeting_replica.c.slug)).all()
    meetings = [m for m in (MeetingSnapshot.model_validate(r) for r in rows) if m.attendance_option != "inactive"]
    if query:
        words = query.lower().split()[:5]

        def text(m: MeetingSnapshot) -> str:
            return " ".join(filter(None, (m.name, m.slug, m.fellowship, FELLOWSHIP_NAMES.get(m.fellowship), m.location,
                                          m.formatted_address, m.postcode, m.site_id))).lower()

        return [m for m in meetings if all(w in text(m) for w in words)][:50]
    own = [m for m in meetings if site_id and m.site_id == site_id]
    return own or meetings[:200]


def meeting_view(meeting: MeetingSnapshot, now: dt.datetime | None = None) -> dict:
    now = now or utcnow()
    occurrence = next_meeting(meeting, after=now)
    nxt = occurrence.start if occurrence else None
    where = meeting.formatted_address or meeting.location
    if meeting.attendance_option == "online":
        where = "Online"
    return {"slug": meeting.slug, "name": meeting.name,
            "fellowship": FELLOWSHIP_NAMES.get(meeting.fellowship, meeting.fellowship),
            "when": meeting_time(meeting), "where": where, "attendance": ATTENDANCE.get(meeting.attendance_option, ""),
            "next": long_datetime(nxt) if nxt else None, "next_date": nxt.date().isoformat() if nxt else "",
            "site_id": meeting.site_id}


def find_link(session: Session, principal: Principal) -> str:
    """The directory's find-a-meeting page, searching near the site's own meetings when known."""
    links = templates.env.globals["links"]
    postcode = None
    if principal.site:
        for meeting in meeting_choices(session, site_id=principal.site, query=""):
            if meeting.site_id == principal.site and meeting.postcode:
                postcode = meeting.postcode
                break
    params = {"near": postcode} if postcode else {}
    return links["find"] + (f"?{urlencode(params)}" if params else "")


# --- the list ----------------------------------------------------------------------------

@router.get("", response_class=HTMLResponse)
def desk(request: Request, session: SessionDep, principal: Desk, status: str = "", stage: str = "", meeting: str = "",
         site: str = "", page: str = "1", notice: str = ""):
    errors = {}
    if status and status not in REFERRAL_STATUSES:
        errors["status"], status = "Choose a status from the list", ""
    if stage and stage not in Stage._value2member_map_:
        errors["stage"], stage = "Choose a stage from the list", ""
    page_no = int(page) if page.isdigit() and 0 < int(page) < 100_000 else 1
    site_id = (site[:64] or None) if principal.role == Role.admin else principal.site
    criteria = {"site_id": site_id, "status": status or None, "stage": Stage(stage) if stage else None,
                "meeting_slug": meeting[:200] or None, "limit": PAGE_SIZE}
    items, total = service.list_referrals(session, **criteria, offset=(page_no - 1) * PAGE_SIZE)
    if not items and total:  # past the last page (an old link): show the last page
        page_no = -(-total // PAGE_SIZE)
        items, total = service.list_referrals(session, **criteria, offset=(page_no - 1) * PAGE_SIZE)
    # The meetings this site has referred to, for the filter and the rows.
    slug_query = select(Referral.meeting_slug).distinct()
    if site_id:
        slug_query = slug_query.where(Referral.site_id == site_id)
    used = set(session.scalars(slug_query).all()) | {r.meeting_slug for r in items}
    meetings = meetings_by_slug(session, used)
    reminders = reminder_counts(session, [r.id for r in items])
    rows = [{"referral": r, "meeting": meetings.get(r.meeting_slug, (None, False))[0],
             "meeting_time": meeting_time(meetings.get(r.meeting_slug, (None, False))[0]),
             "planned": planned_when(r.planned_date, meetings.get(r.meeting_slug, (None, False))[0]),
             "reminders": reminder_state(r, reminders.get(r.id, {}))} for r in items]
    filters = {k: v for k, v in (("status", status), ("stage", stage), ("meeting", meeting), ("site", site)) if v}
    pages = max(1, -(-total // PAGE_SIZE))
    return render(templates, request, "desk.html", {
        "title": f"{'Error: ' if errors else ''}Referrals", "principal": principal,
        "rows": rows, "total": total, "errors": errors,
        "filters": filters, "statuses": [(s, STATUS_NAMES.get(s, s)) for s in REFERRAL_STATUSES],
        "stages": [(s.value, STAGE_NAMES[s]) for s in Stage],
        "meeting_options": sorted(((slug, m[0].name) for slug, m in meetings.items()), key=lambda x: x[1].lower())
        + [(slug, slug) for slug in sorted(used - meetings.keys())],
        "page": page_no, "pages": pages, "first": (page_no - 1) * PAGE_SIZE + 1 if total else 0,
        "last": min(page_no * PAGE_SIZE, total),
        "prev_url": f"?{urlencode({**filters, 'page': page_no - 1})}" if page_no > 1 else None,
        "next_url": f"?{urlencode({**filters, 'page': page_no + 1})}" if page_no < pages else None,
        "notice": NOTICES.get(notice), "is_admin": principal.role == Role.admin,
    }, status_code=400 if errors else 200)


def reminder_counts(session: Session, referral_ids: list[uuid.UUID]) -> dict[uuid.UUID, dict[str, int]]:
    if not referral_ids:
        return {}
    rows = session.execute(select(ReferralReminder.referral_id, ReferralReminder.status, func.count())
                           .where(ReferralReminder.referral_id.in_(referral_ids))
                           .group_by(ReferralReminder.referral_id, ReferralReminder.status)).all()
    out: dict[uuid.UUID, dict[str, int]] = {}
    for referral_id, status, count in rows:
        out.setdefault(referral_id, {})[status] = count
    return out


def reminder_state(referral: Referral, counts: dict[str, int]) -> str:
    if referral.consent_withdrawn_at is not None:
        return "Consent withdrawn: no reminders"
    if not referral.consent_to_reminders:
        return "No reminders (no consent)"
    words = []
    if counts.get("scheduled"):
        words.append(f"{counts['scheduled']} planned")
    sent = counts.get("sent", 0) + counts.get("delivered", 0)
    if sent:
        words.append(f"{sent} sent")
    if counts.get("failed"):
        words.append(f"{counts['failed']} not delivered")
    state = "Consent given" + (f": {', '.join(words)}" if words else ": reminders not planned yet")
    if referral.contact_unreachable_at is not None:
        state += " (contact unreachable)"
    return state


# --- a new referral ----------------------------------------------------------------------

FORM_FIELDS = ("meeting", "client_reference", "support", "planned_date", "consent", "mobile", "email",
               "reminder_detail", "site_id")
FIELD_FOR = {"meeting_slug": "meeting", "consent.wording_version": "consent", "consent.to_reminders": "consent"}
FIELD_LABELS = {"meeting": "Meeting", "client_reference": "Client reference", "support": "Support arranged",
                "planned_date": "Planned first meeting date", "consent": "Consent to reminders", "mobile": "Mobile number",
                "email": "Email address", "reminder_detail": "Reminder detail", "site_id": "Site", "reason": "Reason",
                "accompanied": "Accompanied", "to": "Stage"}


def new_form_context(request: Request, session: Session, principal: Principal, *, values: dict[str, str],
                     errors: dict[str, str], query: str = "") -> dict:
    chosen = None
    slug = values.get("meeting", "")
    if slug:
        try:
            chosen = meeting_view(service.available_meeting(session, slug))
        except service.ReferralError as exc:
            errors.setdefault("meeting", sentence(exc.message))
    choices = [] if chosen else [meeting_view(m) for m in meeting_choices(session, site_id=principal.site, query=query)]
    if chosen and not values.get("planned_date"):
        values["planned_date"] = chosen["next_date"]
    return {
        "title": f"{'Error: ' if errors else ''}Refer a client", "principal": principal,
        "values": values, "errors": errors, "query": query,
        "chosen": chosen, "choices": choices, "find_url": find_link(session, principal),
        "consent_version": service.CURRENT_CONSENT_WORDING,
        "consent_text": service.CONSENT_WORDING[service.CURRENT_CONSENT_WORDING],
        "supports": SUPPORT_NAMES, "details": DETAIL_NAMES, "is_admin": principal.role == Role.admin,
        "labels": FIELD_LABELS,
    }


@router.get("/new", response_class=HTMLResponse)
def new_referral(request: Request, session: SessionDep, principal: Desk, meeting: str = "", q: str = ""):
    values = {"meeting": meeting[:200], "support": "none", "reminder_detail": "discreet"}
    return render(templates, request, "new_referral.html", new_form_context(request, session, principal, values=values,
                                                                 errors={}, query=q[:100].strip()))


def referral_errors(exc: ValidationError) -> dict[str, str]:
    errors: dict[str, str] = {}
    for error in exc.errors():
        loc = ".".join(str(p) for p in error.get("loc", ()))
        field = FIELD_FOR.get(loc, loc.split(".")[0] or "client_reference")
        field = FIELD_FOR.get(field, field)
        message = sentence(error.get("msg", "is not valid"))
        if error.get("type") in ("string_too_short", "missing") and field == "client_reference":
            message = "Enter the client reference, for example CRY-0042"
        elif error.get("type") == "string_too_short" and field == "meeting":
            message = "Choose a meeting"
        elif field == "planned_date":
            message = "Enter the planned date as a real date, for example 24 11 2026"
        errors.setdefault(field, message)
    return errors


@router.post("/new", response_class=HTMLResponse)
def create_referral(request: Request, session: SessionDep, principal: Desk, form: FormFields):
    values = {name: form.get(name, "") for name in FORM_FIELDS}
    consent_ticked = form.get("consent") == "yes"
    errors: dict[str, str] = {}
    data = {
        "meeting_slug": values["meeting"], "client_reference": values["client_reference"],
        "support": values["support"] or "none", "planned_date": values["planned_date"] or None,
        "mobile": values["mobile"] or None, "email": values["email"] or None,
        "reminder_detail": values["reminder_detail"] or "discreet",
        "consent": {"to_reminders": True, "wording_version": service.CURRENT_CONSENT_WORDING} if consent_ticked else None,
    }
    site_id = principal.site
    if principal.role == Role.admin:
        site_id = values["site_id"][:64]
        if not site_id:
            errors["site_id"] = "Enter the site the referral is for"
    if consent_ticked and not (values["mobile"] or values["email"]):
        errors["consent"] = "Give a mobile number or an email address for the reminders, or untick consent"
    referral = None
    try:
        referral_in = ReferralIn.model_validate(data)
    except ValidationError as exc:
        errors = {**referral_errors(exc), **errors}
        if "consent" in errors and not consent_ticked:
            errors["consent"] = ("Tick to confirm the client agreed to reminders, or leave the mobile number and email "
                                 "address empty")
    else:
        if not errors:
            try:
                with unit_of_work(session):
                    referral = service.create_referral(session, referral_in=referral_in, site_id=site_id,
                                                       by=principal.subject)
            except service.ReferralError as exc:
                errors[FIELD_FOR.get(exc.field, exc.field)] = sentence(exc.message)
    if errors or referral is None:
        context = new_form_context(request, session, principal, values=values, errors=errors)
        return render(templates, request, "new_referral.html", context, status_code=422)
    return RedirectResponse(f"/desk/referrals/{referral.id}?notice=created", status_code=303)


# --- one referral ------------------------------------------------------------------------

def referral_context(request: Request, session: Session, principal: Principal, referral: Referral, *,
                     errors: dict[str, str] | None = None, failed: str | None = None, values: dict[str, str] | None = None,
                     notice: str | None = None, problem: str | None = None) -> dict:
    view = service.referral_out(referral, reveal=service.reveals_contact(principal, referral.site_id), detail=True,
                                session=session)
    audit.record_contact_view(session, principal=principal, referral=referral, via="desk", reveal=not view.contact.masked)
    found = meetings_by_slug(session, {referral.meeting_slug}).get(referral.meeting_slug)
    meeting = meeting_view(found[0]) if found else None
    transitions = []
    for name in view.allowed_transitions:
        stage = Stage(name)
        label, hint = ACTIONS[stage]
        transitions.append({"to": name, "label": label, "hint": hint, "warning": stage in WARNING_STAGES,
                            "reason": "required" if stage in service.REASON_REQUIRED
                            else "optional" if stage == Stage.entered_in_error else None,
                            "accompanied": stage == Stage.first_meeting_attended,
                            "planned_date": stage == Stage.first_meeting_planned})
    history = [{"at": long_datetime(h.at), "by": h.by, "action": HISTORY_ACTIONS.get(h.action, h.action),
                "from": stage_name(h.from_stage) if h.from_stage and h.action == "transition" else None,
                "to": stage_name(h.to_stage), "reason": h.reason,
                "accompanied": None if h.accompanied is None else ("Yes" if h.accompanied else "No")}
               for h in view.history]
    reminders = [{"kind": REMINDER_KIND_LABELS.get(r.kind, r.kind), "channel": CHANNELS.get(r.channel, r.channel),
                  "due": long_datetime(r.due_at) if r.due_at else "Not known",
                  "status": REMINDER_STATUSES.get(r.status, r.status),
                  "reason": r.reason} for r in view.reminders]
    return {
        "title": f"{'Error: ' if errors or problem else ''}Referral {referral.client_reference}", "principal": principal,
        "referral": view,
        "meeting": meeting, "meeting_withdrawn": bool(found and not found[1]),
        "meeting_change": {"what": referral.meeting_change, "at": long_datetime(referral.meeting_changed_at),
                           "new": referral.meeting_change_seen_at is None} if referral.meeting_changed_at else None,
        "planned": planned_when(referral.planned_date, found[0] if found else None),
        "support": SUPPORT_NAMES.get(referral.support, referral.support),
        "detail": DETAIL_NAMES.get(referral.reminder_detail, referral.reminder_detail),
        "transitions": transitions, "history": history, "reminders": reminders,
        "consent_active": referral.consent_to_reminders and referral.consent_withdrawn_at is None,
        "errors": errors or {}, "failed": failed, "values": values or {}, "notice": NOTICES.get(notice or ""),
        "problem": problem, "labels": FIELD_LABELS,
        **replies_context(session, referral),
        **session_calendar(referral, found),
    }


@router.get("/referrals/{referral_id}", response_class=HTMLResponse)
def show_referral(request: Request, referral_id: str, session: SessionDep, principal: Desk, notice: str = ""):
    referral = load_referral(session, principal, referral_id)
    response = render(templates, request, "referral.html", referral_context(request, session, principal, referral, notice=notice))
    mark_seen(session, principal, referral)
    return response


@router.post("/referrals/{referral_id}/transitions", response_class=HTMLResponse)
def move_referral(request: Request, referral_id: str, session: SessionDep, principal: Desk, form: FormFields):
    referral = load_referral(session, principal, referral_id, lock=True)
    to = form.get("to", "")
    values = {"reason": form.get("reason", ""), "accompanied": form.get("accompanied", ""),
              "planned_date": form.get("planned_date", "")}
    errors: dict[str, str] = {}
    try:
        planned = parse_date(values["planned_date"])
    except ValueError:
        planned = None
        errors["planned_date"] = "Enter the planned date as a real date, for example 24/11/2026"
    accompanied = {"yes": True, "no": False}.get(values["accompanied"])
    if to not in Stage._value2member_map_:
        session.rollback()
        return render(templates, request, "referral.html", referral_context(
            request, session, principal, referral, problem="Choose one of the actions below."), status_code=400)
    stage = Stage(to)
    if stage in service.REASON_REQUIRED and not values["reason"]:
        errors["reason"] = f"Give a reason to {ACTIONS[stage][0][0].lower()}{ACTIONS[stage][0][1:]}"
    if stage == Stage.first_meeting_attended and accompanied is None:
        errors["accompanied"] = "Say whether someone went with the client to the meeting"
    if len(values["reason"]) > 500:
        errors["reason"] = "Keep the reason to 500 characters or fewer"
    if not errors:
        try:
            with unit_of_work(session):
                transition_in = TransitionIn(to=stage, reason=values["reason"] or None, accompanied=accompanied,
                                             planned_date=planned)
                service.transition_referral(session, referral=referral, transition_in=transition_in,
                                            by=principal.subject)
        except service.IllegalTransition:
            referral = load_referral(session, principal, referral_id)
            return render(templates, request, "referral.html", referral_context(
                request, session, principal, referral,
                problem=f"This referral cannot move to \u201c{STAGE_NAMES[stage]}\u201d from "
                        f"\u201c{STAGE_NAMES[Stage(referral.business_status)]}\u201d. Someone may have changed it "
                        "meanwhile: choose one of the actions below."),
                status_code=409)
        except service.ReferralError as exc:
            errors[exc.field] = sentence(exc.message)
        except ValidationError as exc:
            for error in exc.errors():
                errors.setdefault(str(error["loc"][0]) if error.get("loc") else "reason", sentence(error["msg"]))
    if errors:
        session.rollback()  # the lock taken to check the move
        referral = load_referral(session, principal, referral_id)
        return render(templates, request, "referral.html", referral_context(request, session, principal, referral, errors=errors,
                                                                failed=to, values=values), status_code=422)
    return RedirectResponse(f"/desk/referrals/{referral.id}?notice=moved", status_code=303)


@router.post("/referrals/{referral_id}/consent-withdrawal", response_class=HTMLResponse)
def withdraw_consent(request: Request, referral_id: str, session: SessionDep, principal: Desk, _form: FormFields):
    referral = load_referral(session, principal, referral_id, lock=True)
    try:
        with unit_of_work(session):
            service.withdraw_consent(session, referral=referral, by=principal.subject)
    except service.ConsentNotGiven:
        referral = load_referral(session, principal, referral_id)
        return render(templates, request, "referral.html", referral_context(
            request, session, principal, referral, problem="The client never consented to reminders, so there is "
                                                           "no consent to withdraw."), status_code=409)
    return RedirectResponse(f"/desk/referrals/{referral.id}?notice=consent-withdrawn", status_code=303)


# --- the client's replies and reports (docs/TEXT-REPLIES.md) -----------------------------------

NOTICES.update({
    "report-confirmed": "Confirmed: the stage now shows what the client reported.",
    "report-dismissed": "The client's report was set aside; the stage is unchanged.",
})
HISTORY_ACTIONS.setdefault("opted_in", "Client opted back in (texted START)")
REPORTS = {"attended": "The client says they went to the meeting",
           "not_attended": "The client says they did not go to the meeting"}
REPORT_STATES = {"waiting": "Waiting for you to confirm", "confirmed": "Confirmed", "dismissed": "Set aside"}


def replies_context(session: Session, referral: Referral) -> dict:
    """The referral's replies, newest first, and which are new to whoever is looking."""
    replies = [{"id": r.id, "at": long_datetime(r.received_at), "text": r.text, "new": r.seen_at is None,
                "report": REPORTS.get(r.attendance or ""), "attendance": r.attendance,
                "state": REPORT_STATES.get(r.report_state or ""), "waiting": r.report_state == service.REPORT_WAITING}
               for r in service.replies_of(session, referral.id)]
    return {"replies": replies, "can_confirm": referral.status not in ("completed", "failed", "cancelled",
                                                                        "entered-in-error")}


def mark_seen(session: Session, principal: Principal, referral: Referral) -> None:
    """Replies (and a change to the meeting) are unread until a keyworker or site lead of the
    referral's own site has seen them."""
    if principal.role in (Role.keyworker, Role.site_lead) and principal.site == referral.site_id:
        with unit_of_work(session):
            service.mark_replies_seen(session, referral=referral, by=principal.subject)
            service.mark_meeting_change_seen(session, referral=referral)


def _reply_id(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


@router.post("/referrals/{referral_id}/replies/{reply_id}/confirmation", response_class=HTMLResponse)
def confirm_report(request: Request, referral_id: str, reply_id: str, session: SessionDep, principal: Desk,
                   form: FormFields):
    """One click: the client's YES or NO becomes the referral's stage."""
    referral = load_referral(session, principal, referral_id, lock=True)
    accompanied = {"yes": True, "no": False}.get(form.get("accompanied", ""))
    key = _reply_id(reply_id)
    try:
        with unit_of_work(session):
            if key is None:
                raise service.ReferralError("reply", "that reply is not the client's report of attendance")
            service.confirm_report(session, referral=referral, reply_id=key, by=principal.subject,
                                   accompanied=accompanied)
    except (service.ReferralError, service.IllegalTransition) as exc:
        referral = load_referral(session, principal, referral_id)
        problem = sentence(exc.message) if isinstance(exc, service.ReferralError) else (
            f"The referral is at \u201c{STAGE_NAMES[Stage(referral.business_status)]}\u201d, so this report cannot "
            "change it. Choose one of the actions below, or set the report aside.")
        unanswered = isinstance(exc, service.ReferralError) and exc.field == "accompanied"
        return render(templates, request, "referral.html", referral_context(request, session, principal, referral,
                                                                problem=problem), status_code=422 if unanswered else 409)
    return RedirectResponse(f"/desk/referrals/{referral.id}?notice=report-confirmed", status_code=303)


@router.post("/referrals/{referral_id}/replies/{reply_id}/dismissal", response_class=HTMLResponse)
def dismiss_report(request: Request, referral_id: str, reply_id: str, session: SessionDep, principal: Desk,
                   _form: FormFields):
    referral = load_referral(session, principal, referral_id, lock=True)
    key = _reply_id(reply_id)
    try:
        with unit_of_work(session):
            if key is None:
                raise service.ReferralError("reply", "that reply is not the client's report of attendance")
            service.dismiss_report(session, referral=referral, reply_id=key, by=principal.subject)
    except service.ReferralError as exc:
        referral = load_referral(session, principal, referral_id)
        return render(templates, request, "referral.html", referral_context(request, session, principal, referral,
                                                                problem=sentence(exc.message)), status_code=409)
    return RedirectResponse(f"/desk/referrals/{referral.id}?notice=report-dismissed", status_code=303)


# --- the planned session in the client's calendar (services/referrals/ics.py) ---------------

def calendar_refusal(referral: Referral, found: tuple[MeetingSnapshot, bool] | None,
                     now: dt.datetime | None = None) -> str | None:
    """Why the planned session cannot go in a calendar, or None if it can."""
    if referral.ended_at is not None:  # completed, failed, cancelled or entered in error
        return "This referral has ended, so there is no planned session to add to a calendar."
    if found is None or not found[1]:
        return "The meeting is no longer listed, so there is no session to add to a calendar."
    meeting = found[0]
    start = ics.session_start(planned_date=referral.planned_date, meeting=meeting)
    if start is None:
        return "This meeting is by arrangement: it has no set time to add to a calendar."
    occurrence = ics.occurrence_of(planned_date=referral.planned_date, meeting=meeting)
    if occurrence is not None and occurrence.closed:
        note = f" ({occurrence.note})" if occurrence.note else ""
        return f"The meeting is closed on the planned date{note}: plan another date with the client first."
    if start + ics.length_of(meeting, occurrence) <= (now or utcnow()):
        return "The planned session has already taken place."
    return None


def session_calendar(referral: Referral, found: tuple[MeetingSnapshot, bool] | None) -> dict:
    """The referral page's download link, and the wording it will use."""
    if calendar_refusal(referral, found) is not None:
        return {"calendar": None}
    return {"calendar": {"url": f"/desk/referrals/{referral.id}/session.ics",
                         "discreet": referral.reminder_detail != "full"}}


@router.get("/referrals/{referral_id}/session.ics")
def planned_session_ics(request: Request, referral_id: str, session: SessionDep, principal: Desk):
    """The planned session as a calendar file, to send to the client or add on their phone with them."""
    referral = load_referral(session, principal, referral_id)
    found = meetings_by_slug(session, {referral.meeting_slug}).get(referral.meeting_slug)
    if (refusal := calendar_refusal(referral, found)) is not None:
        return render(templates, request, "message.html", {
            "title": "No calendar entry", "principal": principal, "message": refusal}, status_code=404)
    body = ics.planned_session_calendar(referral_id=referral.id, planned_date=referral.planned_date,
                                        meeting=found[0], detail=referral.reminder_detail, now=utcnow(),
                                        directory_url=runtime.settings.directory_public_url)
    return Response(body, media_type="text/calendar; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="meeting-{referral.planned_date.isoformat()}.ics"'})


# --- the work queue ------------------------------------------------------------------------------

QUEUE_HEADINGS = {
    "reports": ("Client reports to confirm", "The client answered the follow-up text YES or NO."),
    "replies": ("Unread messages from clients", "Open the referral to read them."),
    "meeting_changed": ("Meeting changed", "The meeting moved, changed venue or joining details, or was withdrawn: "
                                           "check the plan with the client. Their reminders follow the change."),
    "no_outcome": ("Meeting date passed, no outcome recorded", "Record whether the client went."),
    "unreachable": ("Could not reach the client", "A reminder could not be delivered: check the contact details."),
    "opted_out": ("Client opted out of reminders", "The client replied STOP or unsubscribed. The referral carries on."),
}


@router.get("/queue", response_class=HTMLResponse)
def work_queue(request: Request, session: SessionDep, principal: Desk, mine: str = "", client: str = "",
               site: str = ""):
    """Needs attention: what to do next, by kind, oldest first. A site lead sees the whole site; a
    keyworker starts with their own referrals."""
    errors = {}
    reference = client.strip().upper()[:24]
    if reference and not all(c.isalnum() or c == "-" for c in reference):
        errors["client"], reference = "A client reference has only letters, digits and hyphens", ""
    mine_only = mine == "1" if mine in ("0", "1") else principal.role == Role.keyworker
    site_id = (site[:64] or None) if principal.role == Role.admin else principal.site
    queue = service.work_queue(session, site_id=site_id, created_by=principal.subject if mine_only else None,
                               client_reference=reference or None)
    sections = []
    for kind in service.QUEUE_KINDS:
        heading, hint = QUEUE_HEADINGS[kind]
        rows = [{"referral": r, "since": long_date(at) if isinstance(at, dt.date) and not isinstance(at, dt.datetime)
                 else long_datetime(at)} for r, at in queue[kind]]
        sections.append({"kind": kind, "heading": heading, "hint": hint, "rows": rows})
    return render(templates, request, "queue.html", {
        "title": f"{'Error: ' if errors else ''}Needs attention", "principal": principal, "errors": errors,
        "sections": sections, "total": sum(len(s["rows"]) for s in sections), "mine": mine_only,
        "client": reference, "site": site if principal.role == Role.admin else "",
        "is_admin": principal.role == Role.admin,
    }, status_code=400 if errors else 200)


def setup_desk(app) -> None:
    """Add the desk's pages and the not-found page to the referrals app (after shared setup_pages)."""
    app.include_router(router)
    app.state.private_paths = (*app.state.private_paths, "/desk")  # clients' contact details: never cached

    @app.exception_handler(PageNotFound)
    async def not_found(request: Request, exc: PageNotFound):
        return templates.TemplateResponse(request, "message.html", {
            "title": "Page not found", "message": exc.message, "principal": page_principal(request)}, status_code=404)

