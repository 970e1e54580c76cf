"""Directory domain logic for meetings and pilot sites: plain functions the API, CLI, tasks and tests call.

Search and geometry live in search.py, engagement counters in engagement.py.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.directory import answers
from services.directory.geocode import Geocoder, default_geocoder
from services.directory.models import Meeting, MeetingChange, Site
from services.directory.runtime import runtime
from services.directory.schemas import MeetingExceptionIn, MeetingIn, SiteIn
from services.directory.search import grid_cell, haversine_km, resolve_near, search_meetings  # noqa: F401 (bench/)
from shared.errors import Conflict, InvalidInput, NotFound  # noqa: F401 (the API and pages catch them here)
from shared.events import MeetingSnapshot, MeetingWithdrawn, utcnow
from shared.meeting_time import ScheduleError, check_schedule, describe_exception, last_date


class MeetingExists(Conflict):
    pass


DERIVED = ("types_key", "cell", "weekly", "last_date")  # columns computed from others, not named in the history


# --- meetings -------------------------------------------------------------------------------

def snapshot(meeting: Meeting) -> MeetingSnapshot:
    return MeetingSnapshot.model_validate(meeting, from_attributes=True)


def meeting_in_of(meeting: Meeting) -> dict:
    """The stored meeting in MeetingIn's terms (PATCH merges changes into this)."""
    return {name: getattr(meeting, name) for name in MeetingIn.model_fields}


def meeting_values(session: Session, meeting_in: MeetingIn, geocoder: Geocoder | None = None) -> dict:
    """Column values of a meeting, after the checks that span several fields."""
    values = meeting_in.model_dump()
    schedule_values(values)
    if values["day"] is not None and values["time"] is None:
        raise InvalidInput("time", "a meeting held on a day needs a start time (HH:MM)")
    if values["time"] is not None and values["day"] is None:
        raise InvalidInput("day", "a meeting with a start time needs a day (0-6, Sunday = 0)")
    if (values["latitude"] is None) != (values["longitude"] is None):
        raise InvalidInput("longitude" if values["longitude"] is None else "latitude", "give both latitude and longitude")
    attendance = values["attendance_option"]
    if attendance in ("online", "hybrid") and not (values["conference_url"] or values["conference_phone"]):
        raise InvalidInput("conference_url", f"{attendance} meetings need a conference_url or conference_phone")
    if values["postcode"] and values["latitude"] is None:
        point = (geocoder or default_geocoder()).locate(values["postcode"])
        if point is None:
            raise InvalidInput("postcode", f"unknown postcode {values['postcode']!r}")
        values["latitude"], values["longitude"] = point
        values["approximate"] = True
    # site_id is a loose link: meetings may be entered before their pilot site is registered.
    values["types_key"] = "|" + "".join(f"{t}|" for t in values["types"])
    located = values["latitude"] is not None and attendance in ("in_person", "hybrid", "inactive")
    values["cell"] = grid_cell(values["latitude"], values["longitude"]) if located else None
    return values


def schedule_values(values: dict) -> None:
    """Check the schedule (422 saying what is wrong), derive ``day`` from it and set the columns search reads."""
    exceptions = sorted(values["exceptions"], key=lambda e: e["date"])
    try:
        values["rrule"], values["day"] = check_schedule(day=values["day"], time=values["time"], rrule=values["rrule"],
                                                        dtstart=values["dtstart"], exceptions=exceptions)
    except ScheduleError as exc:
        raise InvalidInput(exc.field, exc.message) from exc
    values["exceptions"] = [{**e, "date": e["date"].isoformat()} for e in exceptions]
    values["weekly"] = not (values["rrule"] or values["dtstart"] or exceptions)
    values["last_date"] = last_date(values)


def get_meeting(session: Session, slug: str) -> Meeting:
    meeting = session.scalar(select(Meeting).where(Meeting.slug == slug))
    if meeting is None:
        raise NotFound(f"no meeting with slug {slug!r}")
    return meeting


def record_change(session: Session, *, slug: str, by: str, action: str, fields: list[str] | None = None,
                  reason: str | None = None) -> None:
    """One line of a meeting's history (shown on its admin page)."""
    session.add(MeetingChange(slug=slug, at=utcnow(), by=by, action=action,
                              fields=", ".join(sorted(fields))[:1000] if fields else None, reason=reason))


def create_meeting(session: Session, *, meeting_in: MeetingIn, source: str | None = None,
                   geocoder: Geocoder | None = None, by: str = "system") -> Meeting:
    """Add a meeting (or bring a withdrawn one back) and publish it."""
    values = meeting_values(session, meeting_in, geocoder)
    meeting = session.scalar(select(Meeting).where(Meeting.slug == meeting_in.slug).with_for_update())
    if meeting is not None and meeting.active:
        raise MeetingExists(f"a meeting with slug {meeting_in.slug!r} already exists")
    now = utcnow()
    if meeting is None:
        meeting = Meeting(**values, source=source, active=True, created_at=now, updated=now)
        session.add(meeting)
    else:
        for key, value in values.items():
            setattr(meeting, key, value)
        meeting.source, meeting.active, meeting.withdrawn_reason, meeting.updated = source, True, None, now
    session.flush()
    record_change(session, slug=meeting.slug, by=by, action="created" if meeting.created_at == now else "republished")
    runtime.outbox.record(session, "meeting.published", snapshot(meeting))
    answers.changed(session)
    return meeting


def update_meeting(session: Session, *, slug: str, meeting_in: MeetingIn,
                   geocoder: Geocoder | None = None, by: str = "system") -> tuple[Meeting, bool]:
    """Replace a live meeting's fields; publishes meeting.updated only if something changed."""
    meeting = session.scalar(select(Meeting).where(Meeting.slug == slug).with_for_update())
    if meeting is None:
        raise NotFound(f"no meeting with slug {slug!r}")
    if meeting_in.slug != slug:
        raise InvalidInput("slug", "a meeting's slug cannot change; withdraw it and create a new one")
    if not meeting.active:
        raise Conflict(f"meeting {slug!r} is withdrawn; create it again to republish it")
    values = meeting_values(session, meeting_in, geocoder)
    changed = {k: v for k, v in values.items() if getattr(meeting, k) != v}
    if not changed:
        return meeting, False
    before = list(meeting.exceptions or [])
    # Feed round trip: a change that does not come with the source's own ``updated`` is a change made here,
    # so the feed's stated time no longer says when the listing last changed (the export then says ``updated``).
    if "listing_updated" not in changed and meeting.listing_updated is not None:
        changed["listing_updated"] = None
    for key, value in changed.items():
        setattr(meeting, key, value)
    meeting.updated = utcnow()
    session.flush()
    record_change(session, slug=slug, by=by, action="updated",
                  fields=_changed_fields(changed), reason=exceptions_change(before, meeting))
    runtime.outbox.record(session, "meeting.updated", snapshot(meeting))
    answers.changed(session)
    return meeting, True


def _changed_fields(changed: dict) -> list[str]:
    """For the history: the fields a person or feed changed (the feed's own ``updated`` follows them)."""
    fields = [k for k in changed if k not in DERIVED]
    return [k for k in fields if k != "listing_updated"] if len(fields) > 1 else fields


def exceptions_change(before: list[dict], meeting: Meeting) -> str | None:
    """For the history: which dated closures or changes were added or taken away."""
    old = {e["date"]: e for e in before}
    new = {e["date"]: e for e in meeting.exceptions or []}
    said = [f"{describe_exception(e)} (added)" for d, e in sorted(new.items()) if old.get(d) != e] + \
        [f"{describe_exception(e)} (removed)" for d, e in sorted(old.items()) if d not in new]
    return "; ".join(said)[:2000] or None


def set_exception(session: Session, *, slug: str, exception_in: MeetingExceptionIn, by: str = "system") -> Meeting:
    """Close one dated occurrence, or change it (replacing what that date had); publishes meeting.updated."""
    meeting = get_meeting(session, slug)
    kept = [e for e in meeting.exceptions or [] if e["date"] != exception_in.date.isoformat()]
    return _with_exceptions(session, meeting, [*kept, exception_in.model_dump()], by=by)


def remove_exception(session: Session, *, slug: str, date: dt.date, by: str = "system") -> Meeting:
    """That date's occurrence is as usual again; publishes meeting.updated. NotFound if it had no exception."""
    meeting = get_meeting(session, slug)
    kept = [e for e in meeting.exceptions or [] if e["date"] != date.isoformat()]
    if len(kept) == len(meeting.exceptions or []):
        raise NotFound(f"meeting {slug!r} has no closure or change on {date.isoformat()}")
    return _with_exceptions(session, meeting, kept, by=by)


def _with_exceptions(session: Session, meeting: Meeting, exceptions: list, *, by: str) -> Meeting:
    meeting_in = MeetingIn.model_validate({**meeting_in_of(meeting), "exceptions": exceptions})
    meeting, _changed = update_meeting(session, slug=meeting.slug, meeting_in=meeting_in, by=by)
    return meeting


def withdraw_meeting(session: Session, *, slug: str, reason: str | None = None, by: str = "system") -> Meeting:
    """Take a meeting out of the directory (kept for the record); publishes meeting.withdrawn once."""
    meeting = session.scalar(select(Meeting).where(Meeting.slug == slug).with_for_update())
    if meeting is None:
        raise NotFound(f"no meeting with slug {slug!r}")
    if not meeting.active:
        return meeting
    meeting.active = False
    meeting.withdrawn_reason = reason
    meeting.updated = utcnow()
    session.flush()
    record_change(session, slug=slug, by=by, action="withdrawn", reason=reason)
    runtime.outbox.record(session, "meeting.withdrawn",
                          MeetingWithdrawn(slug=slug, reason=reason, meeting=snapshot(meeting)))
    answers.changed(session)
    return meeting


def replay_meetings(*, batch: int = 200, progress=None) -> int:
    """Publish every live meeting again (meeting.published) so a new replica can rebuild."""
    last_id, total = 0, 0
    while True:
        with runtime.transaction() as session:
            meetings = session.scalars(select(Meeting).where(Meeting.active.is_(True), Meeting.id > last_id)
                                       .order_by(Meeting.id).limit(batch)).all()
            for meeting in meetings:
                runtime.outbox.record(session, "meeting.published", snapshot(meeting))
        if not meetings:
            return total
        total += len(meetings)
        last_id = meetings[-1].id
        if progress:
            progress(len(meetings))


# --- sites ----------------------------------------------------------------------------------

def create_site(session: Session, *, site_in: SiteIn) -> Site:
    if session.get(Site, site_in.id) is not None:
        raise Conflict(f"a site with id {site_in.id!r} already exists")
    site = Site(**site_in.model_dump())
    session.add(site)
    session.flush()
    return site


def update_site(session: Session, *, site_id: str, site_in: SiteIn) -> Site:
    site = get_site(session, site_id)
    if site_in.id != site_id:
        raise InvalidInput("id", "a site's id cannot change")
    for key, value in site_in.model_dump().items():
        setattr(site, key, value)
    session.flush()
    return site


def get_site(session: Session, site_id: str) -> Site:
    site = session.get(Site, site_id)
    if site is None:
        raise NotFound(f"no pilot site {site_id!r}")
    return site


def site_in_of(site: Site) -> dict:
    return {name: getattr(site, name) for name in SiteIn.model_fields}
