"""Meeting search: where a place is, which grid cells cover a circle, and the live meetings near it."""

from __future__ import annotations

import datetime as dt
import functools
import math
import re
from typing import NamedTuple
from zoneinfo import ZoneInfo

from sqlalchemy import Float, Integer, and_, bindparam, case, func, or_, select
from sqlalchemy.orm import Session

from services.directory.geocode import (
    Geocoder,
    OutcodeGeocoder,
    Places,
    default_geocoder,
    default_places,
    normalise_postcode,
)
from services.directory.models import Meeting, Postcode
from services.directory.schemas import MeetingResult, SearchIn
from shared.crypto import EncryptedText
from shared.errors import InvalidInput
from shared.events import utcnow
from shared.meeting_time import Occurrence, meeting_guide_weekday, next_meeting, occurrence_on, parse_hhmm

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


class Located(NamedTuple):
    latitude: float
    longitude: float
    label: str  # what was understood: "CR0 1AB", "Kendal", "Newport, Isle of Wight", "54.3,-2.7"
    # "postcode": the postcode's own centre (ONS Postcode Directory); "district": the centre of its
    # outward code; "place": a town, village or city's centre; "point": as given.
    precision: str


class AmbiguousPlace(InvalidInput):
    """Several places have that name: the caller chooses one (each choice is a ``near`` that works)."""

    def __init__(self, text: str, choices: list[str]):
        super().__init__("near", f"there is more than one place called {text.strip()!r}: "
                                 f"choose one of {'; '.join(choices)}")
        self.choices = choices

    def error(self) -> dict:
        return {**super().error(), "type": "ambiguous", "choices": self.choices}


def postcode_directory_loaded(session: Session) -> bool:
    return session.scalar(select(Postcode.postcode).limit(1)) is not None


def _locate_postcode(postcode: str, geocoder: Geocoder | None, session: Session | None) -> Located:
    full = " " in postcode
    if geocoder is None and session is not None and full and postcode_directory_loaded(session):
        row = session.get(Postcode, postcode)
        if row is None:
            raise InvalidInput("near", f"unknown postcode {postcode!r}: it is not a live postcode in the "
                                       "ONS Postcode Directory")
        return Located(row.latitude, row.longitude, postcode, "postcode")
    geocoder = geocoder or default_geocoder()
    point = geocoder.locate(postcode)
    if point is None:
        raise InvalidInput("near", f"unknown postcode {postcode!r}")
    precise = full and not isinstance(geocoder, OutcodeGeocoder)
    return Located(point[0], point[1], postcode, "postcode" if precise else "district")


def resolve_near(near: str, geocoder: Geocoder | None = None, *, session: Session | None = None,
                 places: Places | None = None) -> Located:
    """'lat,lng', a UK postcode (full or outward code) or a UK town, village or city -> where it is.

    With ``session``, a full postcode is looked up in the ONS Postcode Directory when one is loaded
    (and refused when it is not there); otherwise it is placed at its district's centre.
    """
    text = near.strip()
    if not text:
        raise InvalidInput("near", "is empty: give a UK postcode, a town or 'latitude,longitude'")
    match = LATLNG.match(text)
    if match:
        lat, lng = float(match.group(1)), float(match.group(2))
        if not -90 <= lat <= 90 or not -180 <= lng <= 180:
            raise InvalidInput("near", f"{near!r}: latitude must be within -90..90 and longitude within -180..180")
        return Located(lat, lng, f"{lat},{lng}", "point")
    postcode = normalise_postcode(text)
    if postcode is not None:
        return _locate_postcode(postcode, geocoder, session)
    if not any(ch.isalpha() for ch in text):
        raise InvalidInput("near", f"{text!r} is neither a UK postcode, a place name nor 'latitude,longitude'")
    places = places or default_places()
    found = places.find(text)
    if not found:
        raise InvalidInput("near", f"unknown place {text!r}: no UK town, village or city of that name is known; "
                                   "check the spelling or give a postcode")
    if len(found) > 1:
        raise AmbiguousPlace(text, list(dict.fromkeys(places.label(p) for p in found)))
    return Located(found[0].latitude, found[0].longitude, places.label(found[0]), "place")


# --- when -----------------------------------------------------------------------------------

SOON = dt.timedelta(hours=1)
USUAL_LENGTH = dt.timedelta(hours=1)  # of a meeting whose end time is not known
SORT_ZONE = ZoneInfo("Europe/London")  # "today" for the soonest-first order; each start is exact in its own zone


def length_of(meeting) -> dt.timedelta:
    if not meeting.time or not meeting.end_time:
        return USUAL_LENGTH
    start, end = parse_hhmm(meeting.time), parse_hhmm(meeting.end_time)
    minutes = (end.hour * 60 + end.minute - start.hour * 60 - start.minute) % (24 * 60)
    return dt.timedelta(minutes=minutes) if minutes else USUAL_LENGTH


def happening(meeting, now: dt.datetime) -> str | None:
    """"in_progress" (started, not yet ended), "starting_soon" (within the hour) or None."""
    return next_and_happening(meeting, now)[1]


def next_and_happening(meeting, now: dt.datetime) -> tuple[Occurrence | None, str | None]:
    """``next_of`` and ``happening`` at once: the first start after one meeting's length ago is the next
    start too, unless that occurrence is in progress."""
    first = next_meeting(meeting, after=now - length_of(meeting))
    if first is None:
        return None, None
    if first.start <= now:
        return next_meeting(meeting, after=now), "in_progress"
    return first, "starting_soon" if first.start - now <= SOON else None


def start_of(day: dt.date) -> dt.datetime:
    """Midnight at the start of ``day`` in Britain."""
    return dt.datetime.combine(day, dt.time(0, 0), SORT_ZONE)


def _clock(now: dt.datetime) -> tuple[int, str, str]:
    """Today's Meeting Guide day, the time now and the time an hour ago (not before midnight), in Britain."""
    local = now.astimezone(SORT_ZONE)
    hour_ago = max(local - USUAL_LENGTH, local.replace(hour=0, minute=0))
    return meeting_guide_weekday(local.date()), f"{local:%H:%M}", f"{hour_ago:%H:%M}"


NO_TIME = 9999  # soonest order of meetings by appointment: after every dated one (a monthly one may be weeks away)


def scheduled_key(occurrence: Occurrence, clock: tuple[int, str, str], today: dt.date) -> tuple:
    """soonest_key's order for a meeting with a schedule: days from today to its next occurrence, then its time."""
    return ((occurrence.start.astimezone(SORT_ZONE).date() - today).days, f"{occurrence.start:%H:%M}")


def soonest_key(day: int | None, time: str | None, end_time: str | None, clock: tuple[int, str, str]) -> tuple:
    """Order by next start from now: in progress and later today first, then the coming days."""
    today, now, hour_ago = clock
    if day is None or time is None:
        return (NO_TIME, "")
    ahead = (day - today) % 7
    if ahead == 0 and time <= now and ((end_time or "") <= now if end_time and end_time > time else time <= hour_ago):
        ahead = 7
    return (ahead, time)


def _soonest_order(clock: tuple[int, str, str]):
    today, now, hour_ago = clock
    over = and_(Meeting.day == today, Meeting.time <= now,
                or_(and_(Meeting.end_time.is_not(None), Meeting.end_time > Meeting.time, Meeting.end_time <= now),
                    and_(or_(Meeting.end_time.is_(None), Meeting.end_time <= Meeting.time), Meeting.time <= hour_ago)))
    return case((or_(Meeting.day.is_(None), Meeting.time.is_(None)), NO_TIME), (over, 7),
                else_=(Meeting.day - today + 7) % 7)


# --- search ---------------------------------------------------------------------------------

FEW = 3  # fewer than this within the radius: the nearest beyond it are shown too
BEYOND_MAX_KM = 200.0


def _like(text: str) -> str:
    """A LIKE pattern (escape character '/') for ``text`` anywhere in a value."""
    return "%" + text.replace("/", "//").replace("%", "/%").replace("_", "/_") + "%"


def _filters(search_in: SearchIn, today: dt.date) -> tuple[tuple, dict]:
    """(which filters are used, their values): the statements of each set of filters are built once
    with placeholders (``_conditions``), since building and keying SQLAlchemy expressions anew for
    every search cost more CPU than running them."""
    days = sorted(set(search_in.days) | ({search_in.day} if search_in.day is not None else set()))
    q = search_in.q.strip().lower() if search_in.q else ""
    values = {"today": today, "days": days, "starts_after": search_in.starts_after,
              "starts_before": search_in.starts_before, "fellowship": search_in.fellowship, "q": _like(q)}
    for i, code in enumerate(search_in.types):
        values[f"type_{i}"] = _like(f"|{code}|")
    used = (bool(days), bool(search_in.starts_after), bool(search_in.starts_before), bool(search_in.fellowship),
            len(search_in.types), search_in.attendance, bool(q))
    return used, values


ATTENDANCE = {"in_person": ("in_person", "hybrid"),  # people can walk into hybrid meetings too
              "online": ("online", "hybrid"),  # and join them online
              "hybrid": ("hybrid",)}


@functools.cache
def _conditions(used: tuple, without: bool = False) -> tuple:
    """The conditions of the filters ``used`` (``_filters``); ``without``: and not one of the ids ``over``."""
    days, after, before, fellowship, types, attendance, q = used
    conditions = [Meeting.active.is_(True), Meeting.attendance_option != "inactive",
                  or_(Meeting.last_date.is_(None), Meeting.last_date >= bindparam("today"))]
    if days:
        conditions.append(Meeting.day.in_(bindparam("days", expanding=True)))
    if after:
        conditions.append(Meeting.time >= bindparam("starts_after"))
    if before:
        conditions.append(Meeting.time <= bindparam("starts_before"))
    if fellowship:
        conditions.append(Meeting.fellowship == bindparam("fellowship"))
    for i in range(types):
        conditions.append(Meeting.types_key.like(bindparam(f"type_{i}"), escape="/"))
    if attendance:
        conditions.append(Meeting.attendance_option.in_(ATTENDANCE[attendance]))
    if q:
        conditions.append(or_(*(func.lower(col).like(bindparam("q"), escape="/") for col in (
            Meeting.name, Meeting.location, Meeting.formatted_address, Meeting.group, Meeting.notes,
            Meeting.postcode, Meeting.city))))
    if without:
        conditions.append(Meeting.id.not_in(bindparam("over", expanding=True)))
    return tuple(conditions)


# The distance ranking as SQL, with placeholders: ``haversine_km`` from the place to each meeting, term
# for term in the same order (Postgres and SQLite 3.35+ have the functions).
_P1, _COS_P1, _LNG = (bindparam(name, type_=Float) for name in ("near_p1", "near_cos_p1", "near_lng"))
_A = func.power(func.sin((func.radians(Meeting.latitude) - _P1) / 2), 2) + _COS_P1 * func.cos(
    func.radians(Meeting.latitude)) * func.power(func.sin(func.radians(Meeting.longitude - _LNG) / 2), 2)
DISTANCE_KM = 2 * EARTH_RADIUS_KM * func.asin(func.sqrt(case((_A > 1.0, 1.0), else_=_A)))
_IN_BOX = (Meeting.latitude.between(bindparam("near_lat0", type_=Float), bindparam("near_lat1", type_=Float)),
           Meeting.longitude.between(bindparam("near_lng0", type_=Float), bindparam("near_lng1", type_=Float)))
_BEYOND = DISTANCE_KM > bindparam("near_inner", type_=Float)


@functools.cache
def _cells(rows: int):
    """Meetings in one of ``rows`` grid-cell id ranges (placeholders near_cell_<i>_from/_to)."""
    return or_(*(Meeting.cell.between(bindparam(f"near_cell_{i}_from", type_=Integer),
                                      bindparam(f"near_cell_{i}_to", type_=Integer)) for i in range(rows)))


def _near(lat: float, lng: float, radius_km: float, inner_km: float) -> tuple[int, dict]:
    """(how many grid rows, the values of the placeholders) of the meetings more than ``inner_km`` and at
    most ``radius_km`` away."""
    ranges, (lat0, lat1, lng0, lng1) = cell_ranges(lat, lng, radius_km)
    p1 = math.radians(lat)
    values = {"near_p1": p1, "near_cos_p1": math.cos(p1), "near_lng": lng, "near_lat0": lat0, "near_lat1": lat1,
              "near_lng0": lng0, "near_lng1": lng1, "near_radius": radius_km, "near_inner": inner_km}
    for i, (a, b) in enumerate(ranges):
        values[f"near_cell_{i}_from"], values[f"near_cell_{i}_to"] = a, b
    return len(ranges), values


# What a public answer reads of a meeting: every column but the withdrawal reason and the encrypted
# ones a public result does not show (the facilitator's and the feed contacts' names, emails and
# phones: decrypting them for every result would be wasted, and they must not leak into it).
PRIVATE_COLUMNS = frozenset({"withdrawn_reason"})


@functools.cache
def public_columns() -> tuple:
    shown = MeetingResult.model_fields.keys()
    return tuple(getattr(Meeting, attr.key) for attr in Meeting.__mapper__.column_attrs
                 if attr.key not in PRIVATE_COLUMNS
                 and (attr.key in shown or not isinstance(attr.columns[0].type, EncryptedText)))


def _shown(ids_only: bool) -> tuple:
    return (Meeting.id,) if ids_only else public_columns()


@functools.cache
def _ranked_query(postgres: bool, where: tuple, rows: int, beyond: bool, ids_only: bool):
    """One statement per set of filters, grid rows and columns shown, built once: reused, its cache
    key is computed once too."""
    # Ties in the order Python's sort gives them (code points: "C" on Postgres; SQLite's own is binary).
    binary = (lambda col: col.collate("C")) if postgres else (lambda col: col)
    distance = DISTANCE_KM.label("distance_km")
    return (select(*_shown(ids_only), distance, func.count().over().label("found"))
            .where(*_conditions(*where), _cells(rows), *_IN_BOX, DISTANCE_KM <= bindparam("near_radius", type_=Float),
                   *([_BEYOND] if beyond else []))
            .order_by(distance, func.coalesce(Meeting.day, 7), binary(func.coalesce(Meeting.time, "")),
                      binary(Meeting.slug))
            .offset(bindparam("offset", type_=Integer)).limit(bindparam("limit", type_=Integer)))


def _ranked(session: Session, where: tuple, values: dict, lat: float, lng: float, radius_km: float, *, offset: int,
            limit: int, inner_km: float = -1.0, ids_only: bool = False) -> tuple[int, list[tuple]]:
    """(how many match, [(row, distance)] of the page) nearest first: one query ranks, counts and reads
    the page, so only the page's rows leave the database (a dense area holds thousands of candidates)."""
    rows, near = _near(lat, lng, radius_km, inner_km)
    values = {**values, **near, "offset": offset, "limit": limit}
    query = _ranked_query(session.get_bind().dialect.name == "postgresql", where, rows, inner_km >= 0, ids_only)
    found = session.execute(query, values).all()
    if found:
        return found[0].found, [(r, r.distance_km) for r in found]
    if offset == 0:
        return 0, []
    count = select(func.count()).select_from(Meeting).where(*_conditions(*where), _cells(rows), *_IN_BOX,
                                                             DISTANCE_KM <= bindparam("near_radius", type_=Float))
    return session.scalar(count, values) or 0, []


def _within(session: Session, where: tuple, values: dict, lat: float, lng: float, radius_km: float) -> list[tuple]:
    """(row, distance) of the candidates at most ``radius_km`` away."""
    rows, near = _near(lat, lng, radius_km, -1.0)
    # Rank on a few columns, then load the page's meetings only.
    found = []
    candidates = select(Meeting.id, Meeting.latitude, Meeting.longitude, Meeting.day, Meeting.time,
                        Meeting.end_time, Meeting.slug, Meeting.weekly).where(*_conditions(*where), _cells(rows), *_IN_BOX)
    for row in session.execute(candidates, {**values, **near}):
        distance = haversine_km(lat, lng, row.latitude, row.longitude)
        if distance <= radius_km:
            found.append((row, distance))
    return found


def _load(session: Session, rows: list[tuple], ids_only: bool) -> list[tuple]:
    if ids_only or not rows:
        return rows
    loaded = {m.id: m for m in session.execute(select(*public_columns()).where(Meeting.id.in_([r.id for r, _ in rows])))}
    return [(loaded[r.id], d) for r, d in rows]


def search_meetings(session: Session, *, search_in: SearchIn, geocoder: Geocoder | None = None,
                    scheduled_ids: list[int] | None = None, ids_only: bool = False) -> dict:
    """Live meetings matching the filters; by distance when ``near`` is given, or soonest first.

    With ``near`` only the grid rows covering the circle are read (an index range per
    row), then exact great-circle distances decide, so the work follows the area searched.
    When fewer than a few are within the radius, the nearest beyond it (up to 200 km) are
    returned as ``beyond``, so a rural search is never simply empty.
    ``scheduled_ids``: the ids of meetings with a schedule, when the caller holds them as they are now
    (answers.py); read here otherwise. ``ids_only``: the results' rows carry the meeting's ``id``
    alone (for a caller that holds what it shows of meetings, api.py).
    Returns {"total", "near", "results": [(meeting, distance_km | None)], "beyond": [...]}.
    """
    now = search_in.now or utcnow()
    today = now.astimezone(SORT_ZONE).date()
    used, values = _filters(search_in, today)
    clock = _clock(now)
    soonest = search_in.sort == "soonest"
    # Meetings with a schedule (few): their next occurrences; those with none (or none open on the date
    # searched) are left out in SQL, so every order and page below stays SQL's.
    # The weekly flag alone first: only its index can answer that (the filters' own indexes would scan).
    if scheduled_ids is None:
        scheduled_ids = session.scalars(select(Meeting.id).where(Meeting.weekly.is_(False))).all()
    scheduled = _scheduled(session, used, {**values, "scheduled": scheduled_ids}, search_in, now) \
        if scheduled_ids else {}
    values["over"] = [i for i, occurrence in scheduled.items() if occurrence is None]
    where = (used, bool(values["over"]))
    conditions = _conditions(*where)
    if search_in.near:
        place = resolve_near(search_in.near, geocoder, session=session)
        lat, lng, radius = place.latitude, place.longitude, search_in.radius_km
        if soonest:  # the order is the next start's: computed here, for every candidate
            found = _within(session, where, values, lat, lng, radius)

            def key(rd):
                occurrence = scheduled.get(rd[0].id) if not rd[0].weekly else None
                when = scheduled_key(occurrence, clock, today) if occurrence else \
                    soonest_key(rd[0].day, rd[0].time, rd[0].end_time, clock)
                return (*when, rd[1], rd[0].slug)
            found.sort(key=key)
            page = found[search_in.offset:search_in.offset + search_in.limit]
            total, page = len(found), _load(session, page, ids_only)
        else:
            total, page = _ranked(session, where, values, lat, lng, radius, offset=search_in.offset,
                                  limit=search_in.limit, ids_only=ids_only)
        beyond: list[tuple] = []
        if total < FEW:
            reach = radius
            while len(beyond) < FEW and reach < BEYOND_MAX_KM:
                reach = min(reach * 2 if reach >= 10 else reach + 10, BEYOND_MAX_KM)
                beyond = _ranked(session, where, values, lat, lng, reach, offset=0, limit=FEW, inner_km=radius,
                                 ids_only=ids_only)[1]
        return {"total": total, "near": {"query": search_in.near, "resolved": place.label,
                                         "precision": place.precision, "latitude": lat, "longitude": lng,
                                         "radius_km": radius},
                "results": page, "beyond": beyond}
    total = session.scalar(select(func.count()).select_from(Meeting).where(*conditions), values) or 0
    order = (_soonest_order(clock), Meeting.time, Meeting.name, Meeting.id) if soonest else \
        (Meeting.day.is_(None), Meeting.day, Meeting.time, Meeting.name, Meeting.id)
    if soonest and any(scheduled.values()):
        return {"total": total, "near": None, "beyond": [],
                "results": _soonest_merged(session, conditions, values, order, scheduled, search_in, clock, today,
                                           ids_only)}
    rows = session.execute(select(*_shown(ids_only)).where(*conditions).order_by(*order)
                           .offset(search_in.offset).limit(search_in.limit), values).all()
    return {"total": total, "near": None, "results": [(m, None) for m in rows], "beyond": []}


@functools.cache
def _scheduled_query(used: tuple):
    return select(Meeting.id, Meeting.day, Meeting.time, Meeting.end_time, Meeting.timezone, Meeting.rrule,
                  Meeting.dtstart, Meeting.exceptions).where(Meeting.id.in_(bindparam("scheduled", expanding=True)),
                                                             *_conditions(used))


def _scheduled(session: Session, used: tuple, values: dict, search_in: SearchIn,
               now: dt.datetime) -> dict[int, Occurrence | None]:
    """The next occurrence (in progress counts) of each meeting of ``values["scheduled"]`` that the filters
    ``used`` match; None for one that has no more (or, searching a date, none open that day). Such meetings
    are few: weekly ones are ordered and filtered in SQL alone."""
    out = {}
    for row in session.execute(_scheduled_query(used), values):
        occurrence = next_meeting(row, after=now - length_of(row))
        if search_in.on_date is not None:
            on = occurrence_on(row, search_in.on_date)
            occurrence = on if on is not None and not on.closed and occurrence is not None else None
        out[row.id] = occurrence
    return out


def _soonest_merged(session: Session, conditions: tuple, values: dict, order: tuple,
                    scheduled: dict[int, Occurrence | None], search_in: SearchIn, clock: tuple[int, str, str],
                    today: dt.date, ids_only: bool) -> list[tuple]:
    """A page of the soonest-first order when some meetings have schedules: weekly ones in SQL's order up to
    the page's end, the scheduled ones by their own next occurrence, merged."""
    end = search_in.offset + search_in.limit
    weekly = session.execute(select(Meeting.id, Meeting.day, Meeting.time, Meeting.end_time, Meeting.name)
                             .where(*conditions, Meeting.weekly.is_(True)).order_by(*order).limit(end), values).all()
    keyed = [((*soonest_key(r.day, r.time, r.end_time, clock), r.name, r.id), r.id) for r in weekly]
    names = dict(session.execute(select(Meeting.id, Meeting.name).where(Meeting.id.in_(list(scheduled)))).all())
    keyed += [((*scheduled_key(o, clock, today), names[i], i), i) for i, o in scheduled.items() if o is not None]
    ids = [i for _key, i in sorted(keyed)[search_in.offset:end]]
    loaded = {m.id: m for m in session.execute(select(*_shown(ids_only)).where(Meeting.id.in_(ids)))} if ids else {}
    return [(loaded[i], None) for i in ids]


def next_of(meeting: Meeting, now: dt.datetime | None = None) -> Occurrence | None:
    """The meeting's next open occurrence (None by appointment, or when its schedule has ended)."""
    return next_meeting(meeting, after=now or utcnow())


def next_start(meeting: Meeting, now: dt.datetime | None = None) -> dt.datetime | None:
    """The meeting's next start in its own timezone (None for appointment-only meetings)."""
    occurrence = next_of(meeting, now)
    return occurrence.start if occurrence else None
