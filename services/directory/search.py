"""Meeting search: where a place is, which grid cells cover a circle, and the live meetings near it."""

from __future__ import annotations

import datetime as dt
import math
import re

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from services.directory.geocode import Geocoder, default_geocoder, normalise_postcode
from services.directory.models import Meeting
from services.directory.schemas import InvalidInput, SearchIn
from shared.events import utcnow
from shared.meeting_time import next_occurrence

EARTH_RADIUS_KM = 6371.0088
KM_PER_DEGREE = math.pi * EARTH_RADIUS_KM / 180
CELLS_PER_DEGREE = 10  # grid cells of 0.1 degree: about 11 km north-south, 7 km east-west in Britain


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
