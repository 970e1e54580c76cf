"""Directory domain logic: plain functions the API, CLI, tasks and tests call."""

from __future__ import annotations

import datetime as dt
import math
import re

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from services.directory.geocode import Geocoder, default_geocoder, normalise_postcode
from services.directory.models import Meeting, Site
from services.directory.runtime import runtime
from services.directory.schemas import MeetingIn, SearchIn, SiteIn
from shared.events import MeetingSnapshot, MeetingWithdrawn, utcnow
from shared.meeting_time import next_occurrence

EARTH_RADIUS_KM = 6371.0088
KM_PER_DEGREE = math.pi * EARTH_RADIUS_KM / 180
CELLS_PER_DEGREE = 10  # grid cells of 0.1 degree: about 11 km north-south, 7 km east-west in Britain


class InvalidInput(ValueError):
    """Bad input the caller must correct: the API answers 422 naming ``field``."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class NotFound(LookupError):
    pass


class MeetingExists(ValueError):
    pass


class Conflict(ValueError):
    pass


# --- geometry -----------------------------------------------------------------------------

def haversine_km(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lng2 - lng1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def _row(lat: float) -> int:
    return math.floor(lat * CELLS_PER_DEGREE) + 90 * CELLS_PER_DEGREE


def _col(lng: float) -> int:
    return math.floor(lng * CELLS_PER_DEGREE) + 180 * CELLS_PER_DEGREE


def grid_cell(lat: float, lng: float) -> int:
    """The indexed grid cell of a point: row-major, so one grid row is one range of ids."""
    return _row(lat) * 10_000 + _col(lng)


def cell_ranges(lat: float, lng: float, radius_km: float) -> tuple[list[tuple[int, int]], tuple[float, float, float, float]]:
    """The id ranges (one per grid row) and bounding box covering a circle."""
    dlat = radius_km / KM_PER_DEGREE
    lat0, lat1 = max(lat - dlat, -89.999), min(lat + dlat, 89.999)
    widest = max(abs(lat0), abs(lat1))
    dlng = min(180.0, radius_km / (KM_PER_DEGREE * max(math.cos(math.radians(widest)), 1e-6)))
    lng0, lng1 = max(lng - dlng, -180.0), min(lng + dlng, 179.999)
    ranges = [(r * 10_000 + _col(lng0), r * 10_000 + _col(lng1)) for r in range(_row(lat0), _row(lat1) + 1)]
    return ranges, (lat0, lat1, lng0, lng1)


LATLNG = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*,\s*(-?\d+(?:\.\d+)?)\s*$")


def resolve_near(near: str, geocoder: Geocoder | None = None) -> tuple[float, float, str]:
    """'lat,lng' or a UK postcode (full or outward code) -> (lat, lng, what was understood)."""
    match = LATLNG.match(near)
    if match:
        lat, lng = float(match.group(1)), float(match.group(2))
        if not -90 <= lat <= 90 or not -180 <= lng <= 180:
            raise InvalidInput("near", f"{near!r}: latitude must be within -90..90 and longitude within -180..180")
        return lat, lng, f"{lat},{lng}"
    postcode = normalise_postcode(near)
    if postcode is None:
        raise InvalidInput("near", f"{near!r} is neither a UK postcode nor 'latitude,longitude'")
    point = (geocoder or default_geocoder()).locate(postcode)
    if point is None:
        raise InvalidInput("near", f"unknown postcode {postcode!r}")
    return point[0], point[1], postcode


# --- meetings -------------------------------------------------------------------------------

def snapshot(meeting: Meeting) -> MeetingSnapshot:
    return MeetingSnapshot.model_validate(meeting, from_attributes=True)


def meeting_in_of(meeting: Meeting) -> dict:
    """The stored meeting in MeetingIn's terms (PATCH merges changes into this)."""
    return {name: getattr(meeting, name) for name in MeetingIn.model_fields}


def meeting_values(session: Session, meeting_in: MeetingIn, geocoder: Geocoder | None = None) -> dict:
    """Column values of a meeting, after the checks that span several fields."""
    values = meeting_in.model_dump()
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


def get_meeting(session: Session, slug: str) -> Meeting:
    meeting = session.scalar(select(Meeting).where(Meeting.slug == slug))
    if meeting is None:
        raise NotFound(f"no meeting with slug {slug!r}")
    return meeting


def create_meeting(session: Session, *, meeting_in: MeetingIn, source: str | None = None,
                   geocoder: Geocoder | None = None) -> Meeting:
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
    runtime.outbox.record(session, "meeting.published", snapshot(meeting))
    return meeting


def update_meeting(session: Session, *, slug: str, meeting_in: MeetingIn,
                   geocoder: Geocoder | None = None) -> tuple[Meeting, bool]:
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
    for key, value in changed.items():
        setattr(meeting, key, value)
    meeting.updated = utcnow()
    session.flush()
    runtime.outbox.record(session, "meeting.updated", snapshot(meeting))
    return meeting, True


def withdraw_meeting(session: Session, *, slug: str, reason: str | None = None) -> Meeting:
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
    runtime.outbox.record(session, "meeting.withdrawn",
                          MeetingWithdrawn(slug=slug, reason=reason, meeting=snapshot(meeting)))
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


# --- search ---------------------------------------------------------------------------------

def _filters(search_in: SearchIn) -> list:
    conditions = [Meeting.active.is_(True), Meeting.attendance_option != "inactive"]
    if search_in.day is not None:
        conditions.append(Meeting.day == search_in.day)
    if search_in.starts_after:
        conditions.append(Meeting.time >= search_in.starts_after)
    if search_in.starts_before:
        conditions.append(Meeting.time <= search_in.starts_before)
    if search_in.fellowship:
        conditions.append(Meeting.fellowship == search_in.fellowship)
    for code in search_in.types:
        conditions.append(Meeting.types_key.contains(f"|{code}|", autoescape=True))
    if search_in.attendance == "in_person":  # people can walk into hybrid meetings too
        conditions.append(Meeting.attendance_option.in_(("in_person", "hybrid")))
    elif search_in.attendance == "online":  # and join them online
        conditions.append(Meeting.attendance_option.in_(("online", "hybrid")))
    elif search_in.attendance == "hybrid":
        conditions.append(Meeting.attendance_option == "hybrid")
    if search_in.q:
        q = search_in.q.strip().lower()
        conditions.append(or_(*(func.lower(col).contains(q, autoescape=True) for col in (
            Meeting.name, Meeting.location, Meeting.formatted_address, Meeting.group, Meeting.notes,
            Meeting.postcode, Meeting.city))))
    return conditions


def search_meetings(session: Session, *, search_in: SearchIn, geocoder: Geocoder | None = None) -> dict:
    """Live meetings matching the filters; by distance when ``near`` is given.

    With ``near`` only the grid rows covering the circle are read (an index range per
    row), then exact great-circle distances decide, so the work follows the area searched.
    Returns {"total", "near", "results": [(meeting, distance_km | None)]}.
    """
    conditions = _filters(search_in)
    if search_in.near:
        lat, lng, label = resolve_near(search_in.near, geocoder)
        ranges, (lat0, lat1, lng0, lng1) = cell_ranges(lat, lng, search_in.radius_km)
        conditions += [or_(*(Meeting.cell.between(a, b) for a, b in ranges)),
                       Meeting.latitude.between(lat0, lat1), Meeting.longitude.between(lng0, lng1)]
        # Rank on a few columns, then load whole meetings for the page only: a dense area
        # holds thousands of candidates, and building each as an ORM object costs most.
        found = []
        candidates = select(Meeting.id, Meeting.latitude, Meeting.longitude, Meeting.day, Meeting.time, Meeting.slug)
        for row in session.execute(candidates.where(and_(*conditions))):
            distance = haversine_km(lat, lng, row.latitude, row.longitude)
            if distance <= search_in.radius_km:
                found.append((row, distance))
        found.sort(key=lambda rd: (rd[1], rd[0].day if rd[0].day is not None else 7, rd[0].time or "", rd[0].slug))
        page = found[search_in.offset:search_in.offset + search_in.limit]
        loaded = {m.id: m for m in session.scalars(select(Meeting).where(Meeting.id.in_([r.id for r, _ in page])))} \
            if page else {}
        return {"total": len(found), "near": {"query": search_in.near, "resolved": label, "latitude": lat,
                                              "longitude": lng, "radius_km": search_in.radius_km},
                "results": [(loaded[r.id], d) for r, d in page]}
    total = session.scalar(select(func.count()).select_from(Meeting).where(*conditions)) or 0
    rows = session.scalars(select(Meeting).where(*conditions)
                           .order_by(Meeting.day.is_(None), Meeting.day, Meeting.time, Meeting.name, Meeting.id)
                           .offset(search_in.offset).limit(search_in.limit)).all()
    return {"total": total, "near": None, "results": [(m, None) for m in rows]}


def next_start(meeting: Meeting, now: dt.datetime | None = None) -> dt.datetime | None:
    """The meeting's next start in its own timezone (None for appointment-only meetings)."""
    if meeting.day is None or meeting.time is None:
        return None
    return next_occurrence(meeting.day, meeting.time, meeting.timezone, now or utcnow())


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
