"""Meeting Guide feeds (code4recovery/spec): lenient import with a report, and export.

Import reads what real feeds contain: ``day`` as a number, a string or a list (one meeting
per day, the slug suffixed with the day's name), times such as "7:30 PM" or "19:30:00",
missing optional fields, ``types`` as a list or a comma-separated string (codes the spec
does not define are kept aside), "yes"/"no" flags. Meetings are matched on slug within a
source: unchanged ones are left alone, changed ones updated, vanished ones withdrawn.

A feed URL is fetched only from public addresses (checked after DNS, on every redirect,
connecting to the address checked), within a size and time limit (``fetch_feed``).
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import json
import math
import re
import socket
import time
from collections import Counter
from collections.abc import Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
import tzfpy
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.directory import service
from services.directory.config import get_settings
from services.directory.feed_schedules import schedule_export, schedule_import
from services.directory.geocode import Geocoder, normalise_postcode
from services.directory.models import Meeting
from services.directory.reference import TYPE_NAMES
from services.directory.schemas import ImportRejection, ImportReport, MeetingIn
from shared.errors import DomainError

DAY_NAMES = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
TIME = re.compile(r"^\s*(\d{1,2})(?::(\d{2}))?(?::\d{2})?\s*([ap])?\.?\s*m?\.?\s*$", re.I)
TEXT_FIELDS = (
    "name", "notes", "location", "location_notes", "formatted_address", "address", "city", "state", "postal_code",
    "country", "region", "sub_region", "district", "conference_url", "conference_url_notes", "conference_phone",
    "conference_phone_notes", "group", "group_notes", "website", "email", "phone", "venmo", "square", "paypal", "url",
    "feedback_url",
    # the feed round-trip fields (models.Meeting)
    "sub_sub_region", "edit_url", "homegroup_online", "entity", "entity_email", "entity_location", "entity_logo",
    "entity_phone", "entity_url", *(f"contact_{n}_{part}" for n in (1, 2, 3) for part in ("name", "email", "phone")),
)
# Spec fields exported as they are stored.
EXPORT_FIELDS = (
    "name", "slug", "day", "time", "end_time", "timezone", "types", "notes", "location", "location_notes",
    "formatted_address", "address", "city", "state", "postal_code", "country", "region", "sub_region", "district",
    "latitude", "longitude", "conference_url", "conference_url_notes", "conference_phone", "conference_phone_notes",
    "group", "group_notes", "website", "email", "phone", "venmo", "square", "paypal", "url", "feedback_url",
    "attendance_option",
    # the feed round-trip fields
    "regions", "sub_sub_region", "edit_url", "homegroup_online", "feedback_emails", "entity", "entity_email",
    "entity_location", "entity_logo", "entity_phone", "entity_url",
    *(f"contact_{n}_{part}" for n in (1, 2, 3) for part in ("name", "email", "phone")),
)
# A row with one of these wrong is refused; a wrong value anywhere else is left out and reported (``left_out``).
ROW_FIELDS = frozenset({"slug", "name", "fellowship", "day", "time", "timezone", "latitude", "longitude",
                        "attendance_option", "feed_slug"})


class FeedError(DomainError, ValueError):
    """The feed as a whole cannot be read: nothing is imported."""

    def body(self) -> dict:
        return {"detail": str(self), "errors": [{"field": "feed", "message": str(self), "type": "feed"}]}


class RowError(ValueError):
    pass


def load_feed(text: str | bytes) -> list:
    try:
        data = json.loads(text)
    except RecursionError as exc:
        raise FeedError("the feed is not valid JSON: it is nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, a number too long to read
        raise FeedError(f"the feed is not valid JSON: {str(exc)[:200]}") from exc
    if not isinstance(data, list):
        raise FeedError(f"a Meeting Guide feed is a JSON list of meetings, this is a JSON {type(data).__name__}")
    return data


# Cloud instance metadata endpoints: never fetched, whatever DIRECTORY_FEED_ALLOW_NETWORKS says.
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200", "192.0.0.192"))
NAT64 = ipaddress.ip_network("64:ff9b::/96")
MAX_REDIRECTS = 5
REFUSED_ADDRESS = "the feed URL points to an address FAMA may not fetch"
COULD_NOT_FETCH = "could not fetch the feed"


class FeedAddressRefused(FeedError):
    """The feed URL (or a redirect) leads to loopback, private, link-local, metadata... addresses."""


def _embedded_ipv4(ip: ipaddress.IPv4Address | ipaddress.IPv6Address):
    """The IPv4 address an IPv6 one carries (mapped, 6to4, Teredo, NAT64), or ``ip`` itself."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped:
            return ip.ipv4_mapped
        if ip.sixtofour:
            return ip.sixtofour
        if ip.teredo:
            return ip.teredo[1]
        if ip in NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def may_fetch(address: str, *, allowed_networks: list) -> bool:
    """Public unicast addresses only (or ones inside ``allowed_networks``), never cloud metadata."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    inner = _embedded_ipv4(ip)
    if ip in METADATA_ADDRESSES or inner in METADATA_ADDRESSES:
        return False
    if any(ip in net or inner in net for net in allowed_networks):
        return True
    return all(a.is_global and not (a.is_multicast or a.is_reserved or a.is_unspecified) for a in (ip, inner))


def _checked_address(url: httpx.URL, allowed_networks: list) -> str:
    """Resolve the URL's host; every address it has must be allowed. Returns the one to connect to."""
    if url.scheme not in ("http", "https") or not url.raw_host:
        raise FeedError("the feed URL must be an http:// or https:// address")
    try:
        infos = socket.getaddrinfo(url.raw_host.decode("ascii"), url.port or (443 if url.scheme == "https" else 80),
                                   type=socket.SOCK_STREAM)
    except (OSError, ValueError) as exc:
        raise FeedError(COULD_NOT_FETCH) from exc
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not addresses or not all(may_fetch(a, allowed_networks=allowed_networks) for a in addresses):
        raise FeedAddressRefused(REFUSED_ADDRESS)
    return addresses[0]


def fetch_feed(url: str) -> list:
    """GET a feed, following at most MAX_REDIRECTS redirects, each hop's address checked.

    The connection goes to the address that was checked (the Host header and TLS name stay
    the URL's), so a DNS answer that changes between check and connect cannot redirect it.
    Errors never name the host or port: they may be internal.
    """
    settings = get_settings()
    allowed = [ipaddress.ip_network(n.strip(), strict=False)
               for n in settings.feed_allow_networks.split(",") if n.strip()]
    deadline = time.monotonic() + settings.feed_fetch_timeout
    try:
        target = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise FeedError("the feed URL is not a valid http:// or https:// address") from exc
    with httpx.Client(trust_env=False, follow_redirects=False) as client:
        for _hop in range(MAX_REDIRECTS + 1):
            address = _checked_address(target, allowed)
            body, location = _get(client, target, address, deadline, settings.feed_max_bytes)
            if location is None:
                return load_feed(body)
            try:
                target = target.join(location)
            except (httpx.InvalidURL, TypeError, ValueError) as exc:
                raise FeedError(f"{COULD_NOT_FETCH}: it redirects to an invalid address") from exc
    raise FeedError(f"{COULD_NOT_FETCH}: more than {MAX_REDIRECTS} redirects")


def _get(client: httpx.Client, url: httpx.URL, address: str, deadline: float, max_bytes: int):
    """(body, None), or (None, Location) for a redirect: one request pinned to ``address``.

    The size limit counts what is read, so the body is asked for uncompressed.
    """
    extensions = {"sni_hostname": url.raw_host.decode("ascii")} if url.scheme == "https" else {}
    host = url.netloc.decode("ascii")
    try:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise httpx.TimeoutException("deadline")
        with client.stream("GET", url.copy_with(host=address), headers={"Host": host, "Accept-Encoding": "identity"},
                           extensions=extensions,
                           timeout=remaining) as response:
            if response.is_redirect:
                return None, response.headers["location"]
            if response.status_code != 200:
                raise FeedError(f"{COULD_NOT_FETCH}: the feed server answered HTTP {response.status_code}")
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise FeedError(f"the feed is larger than {max_bytes} bytes")
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) > max_bytes:
                    raise FeedError(f"the feed is larger than {max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise httpx.TimeoutException("deadline")
            return bytes(body), None
    except httpx.TimeoutException as exc:
        raise FeedError(f"{COULD_NOT_FETCH}: it took longer than the time allowed") from exc
    except httpx.HTTPError as exc:
        raise FeedError(COULD_NOT_FETCH) from exc


def read_feed(path_or_url: str) -> list:
    if re.match(r"^https?://", path_or_url, re.I):
        return fetch_feed(path_or_url)
    try:
        with open(path_or_url, "rb") as fh:
            return load_feed(fh.read())
    except OSError as exc:
        raise FeedError(f"cannot read {path_or_url}: {exc.strerror}") from exc


def parse_time(value) -> str | None:
    """'19:30', '7:30 PM', '7pm', '19:30:00' -> 'HH:MM'; None for an empty value."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    match = TIME.match(str(value))
    if not match:
        raise RowError(f"time {value!r} is not a time of day")
    hours, minutes, half = int(match.group(1)), int(match.group(2) or 0), (match.group(3) or "").lower()
    if half:
        if not 1 <= hours <= 12:
            raise RowError(f"time {value!r} is not a time of day")
        hours = hours % 12 + (12 if half == "p" else 0)
    if hours == 24 and minutes == 0:
        hours = 0
    if hours > 23 or minutes > 59:
        raise RowError(f"time {value!r} is not a time of day")
    return f"{hours:02d}:{minutes:02d}"


def parse_day(value) -> int:
    if isinstance(value, bool):
        raise RowError(f"day {value!r} is not a day")
    if isinstance(value, str):
        text = value.strip().lower()
        if text in DAY_NAMES:
            return DAY_NAMES.index(text)
        if not text.isdigit():
            raise RowError(f"day {value!r} is not a day (0-6, Sunday = 0)")
        value = int(text)
    if not isinstance(value, int) or not 0 <= value <= 6:
        raise RowError(f"day {value!r} is out of range 0-6 (Sunday = 0)")
    return value


def parse_days(value) -> list[int | None]:
    if value is None or value == "" or value == []:
        return [None]  # by appointment
    if isinstance(value, list):
        return sorted({parse_day(v) for v in value})
    return [parse_day(value)]


def _flag(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("yes", "true", "1", "y")
    return bool(value)


def _stated_flag(value) -> bool | None:
    """The spec's stringified booleans ("yes"/"no", true/false); None when the feed does not say."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return _flag(value)


def _number(value, name: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError) as exc:
        raise RowError(f"{name} {value!r} is not a number") from exc
    if not math.isfinite(number):
        raise RowError(f"{name} {value!r} is not a number")
    return number


def _text(value) -> str | None:
    if value is None or isinstance(value, dict):
        return None
    if isinstance(value, list):
        value = ", ".join(str(v) for v in value)
    text = str(value).strip()
    return text or None


def _strings(value, separator: str) -> list[str]:
    """A list of strings, or one string of them separated (the spec's Google Sheet form); blanks dropped."""
    if value is None:
        return []
    items = value if isinstance(value, list) else str(value).split(separator)
    return [text for text in (_text(v) for v in items if not isinstance(v, dict | list)) if text]


def _listing_updated(value) -> dt.datetime | None:
    """The spec's ``updated`` ("YYYY-MM-DD HH:MM:SS", UTC); ISO 8601 with an offset is read too."""
    text = _text(value)
    if text is None:
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"updated {text[:40]!r} is not a date and time (YYYY-MM-DD HH:MM:SS)") from exc
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)


def _attendance(fields: dict, codes: list[str], approximate: bool | None, latitude) -> str:
    """What a row that does not state ``attendance_option`` means, read as TSML UI and the 12 Step Meeting List
    plugin read it: online with a conference link or phone; in person unless the location is temporarily closed
    (type TC) or only an area; neither is inactive."""
    online = bool(fields["conference_url"] or fields["conference_phone"])
    closed = "TC" in codes
    if approximate is None:  # not stated: a street, or an address of four parts or more, is a place (TSML UI's rule)
        located = bool(fields["address"] or len((fields["formatted_address"] or "").split(",")) >= 4)
    else:
        located = not approximate and bool(fields["formatted_address"] or fields["address"]
                                           or latitude not in (None, ""))
    located = located and not closed
    if online:
        return "hybrid" if located else "online"
    if located or not (closed or approximate):
        return "in_person"
    return "inactive"


@functools.lru_cache(maxsize=512)
def _offsets(zone: str) -> tuple:
    """A timezone's UTC offsets in January and July of this year: two zones with the same are the same clock."""
    year = dt.date.today().year
    tz = ZoneInfo(zone)
    return tuple(dt.datetime(year, month, 15, 12, tzinfo=tz).utcoffset() for month in (1, 7))


def timezone_at(latitude: float, longitude: float) -> str | None:
    """The IANA timezone in force at a point (tzfpy, offline), None at sea (where only Etc/ zones are)."""
    zone = tzfpy.get_tz(longitude, latitude)
    return None if not zone or zone.startswith("Etc/") else zone


def check_timezone(*, timezone: str, latitude: float | None, longitude: float | None) -> str | None:
    """The timezone the coordinates lie in when it keeps another clock than ``timezone``; else None."""
    if latitude is None or longitude is None:
        return None
    there = timezone_at(latitude, longitude)
    if there is None or there == timezone:
        return None
    try:
        return None if _offsets(there) == _offsets(timezone) else there
    except (ZoneInfoNotFoundError, ValueError):
        return None  # the model says what is wrong with the timezone


class TimezoneMismatch(RowError):
    def __init__(self, *, timezone: str, there: str, latitude: float, longitude: float):
        self.there = there
        super().__init__(f"the meeting is at {latitude:.4f}, {longitude:.4f}, in timezone {there}, but its times "
                         f"would be read as {timezone}: import the feed with timezone {there}, or correct the row")


def parse_row(row, *, fellowship: str, timezone: str) -> tuple[list[MeetingIn], list[str]]:
    """One feed row -> one MeetingIn per day it is held on, and what was left out of it (and why)."""
    if not isinstance(row, dict):
        raise RowError(f"a meeting is a JSON object, this row is a {type(row).__name__}")
    slug = _text(row.get("slug"))
    if not slug:
        raise RowError("slug is missing")
    if not _text(row.get("name")):
        raise RowError("name is missing")
    left_out: list[str] = []
    raw_types = row.get("types") or []
    if isinstance(raw_types, str):
        raw_types = [t.strip() for t in raw_types.split(",")]
    elif not isinstance(raw_types, list):
        raw_types = [raw_types]
    codes = [str(t).strip() for t in raw_types if not isinstance(t, dict | list) and str(t).strip()]
    fields = {name: _text(row.get(name)) for name in TEXT_FIELDS}
    left_out += [f"{name}: an object is not a text (left out)" for name in TEXT_FIELDS if isinstance(row.get(name), dict)]
    if fields["entity_url"] is None:
        # The spec's field list says entity_website_url; its example, TSML UI and real feeds say entity_url.
        fields["entity_url"] = _text(row.get("entity_website_url"))
    address_approximate = _stated_flag(row.get("approximate"))
    attendance = _text(row.get("attendance_option"))
    if attendance is None:
        attendance = _attendance(fields, codes, address_approximate, row.get("latitude"))
    days = parse_days(row.get("day"))
    start, end = parse_time(row.get("time")), None
    try:
        end = parse_time(row.get("end_time"))
    except RowError as exc:
        left_out.append(f"end_time: {exc}")
    if days != [None] and start is None:
        raise RowError("time is missing for a meeting held on a day")
    try:
        listing_updated = _listing_updated(row.get("updated"))
    except ValueError as exc:
        listing_updated = None
        left_out.append(str(exc))
    base = {
        **fields,
        "fellowship": _text(row.get("fellowship")) or fellowship,
        "time": start if days != [None] else None,
        "end_time": end if days != [None] else None,
        "timezone": _text(row.get("timezone")) or timezone,
        "types": [c for c in dict.fromkeys(codes) if c in TYPE_NAMES],
        "unknown_types": [c for c in dict.fromkeys(codes) if c not in TYPE_NAMES],
        "attendance_option": attendance,
        "latitude": _number(row.get("latitude"), "latitude"),
        "longitude": _number(row.get("longitude"), "longitude"),
        "approximate": bool(address_approximate),
        "postcode": normalise_postcode(_text(row.get("postcode")) or ""),
        "regions": _strings(row.get("regions"), ">"),
        "feedback_emails": _strings(row.get("feedback_emails"), ","),
        "address_approximate": address_approximate,
        "listing_updated": listing_updated,
        "feed_slug": slug if len(days) > 1 else None,
    }
    there = check_timezone(timezone=base["timezone"], latitude=base["latitude"], longitude=base["longitude"])
    if there is not None:
        raise TimezoneMismatch(timezone=base["timezone"], there=there, latitude=base["latitude"],
                               longitude=base["longitude"])
    base.update(schedule_import(row))
    meetings = []
    for day in days:
        meeting_slug = slug if len(days) == 1 else f"{slug}-{DAY_NAMES[day]}"
        meetings.append(_meeting_in({**base, "slug": meeting_slug, "day": day}, left_out))
    return meetings, list(dict.fromkeys(left_out))


def _meeting_in(values: dict, left_out: list[str]) -> MeetingIn:
    """The MeetingIn of a row; a wrong value of a field the meeting can do without is left out (and said)."""
    for _attempt in range(len(values)):
        try:
            return MeetingIn(**values)
        except ValidationError as exc:
            first = exc.errors()[0]
            field = str(first["loc"][0]) if first["loc"] else ""
            where = ".".join(str(p) for p in first["loc"])
            message = f"{where}: {first['msg']}"
            if field in ROW_FIELDS or field not in values or values[field] in (None, [], False):
                raise RowError(message) from exc
            shown = values[field]
            # A contact's details are personal: the report (kept with the import run) does not repeat them.
            value = "the value" if field.startswith("contact_") else f"the value {str(shown)[:60]!r}"
            left_out.append(f"{message} ({value} is left out)")
            values = {**values, field: [] if isinstance(shown, list) else None}
    raise RowError("the row has too many wrong values")


def import_feed(session: Session, *, rows: list, source: str, fellowship: str = "aa", timezone: str = "Europe/London",
                geocoder: Geocoder | None = None, progress: Callable[[int], None] | None = None) -> ImportReport:
    """Apply a parsed feed for ``source`` in the caller's transaction and report what happened.

    A rejected row loses nothing already stored: the meetings it was imported as before stay as they were.
    """
    report = ImportReport(source=source, rows=len(rows))
    unknown: Counter[str] = Counter()
    mismatched: Counter[str] = Counter()
    existing = {m.slug: m for m in session.scalars(select(Meeting).where(Meeting.source == source))}
    seen: set[str] = set()
    for number, row in enumerate(rows, start=1):
        slug = _text(row.get("slug")) if isinstance(row, dict) else None
        try:
            meetings, left_out = parse_row(row, fellowship=fellowship, timezone=timezone)
            for meeting_in in meetings:
                if meeting_in.slug in seen:
                    raise RowError(f"slug {meeting_in.slug!r} appears twice in the feed")
            for meeting_in in meetings:
                seen.add(meeting_in.slug)
                unknown.update(meeting_in.unknown_types)
                _apply(session, report, meeting_in, existing.get(meeting_in.slug), source, geocoder)
            report.left_out += [ImportRejection(row=number, slug=slug, reason=reason) for reason in left_out]
        except (RowError, service.InvalidInput, service.MeetingExists) as exc:
            report.rejected.append(ImportRejection(row=number, slug=slug[:200] if slug else None, reason=str(exc)))
            if isinstance(exc, TimezoneMismatch):
                mismatched[exc.there] += 1
            if slug:
                kept = {s for s, m in existing.items() if m.active and s not in seen and (s == slug or m.feed_slug == slug)}
                report.kept_as_they_were += len(kept)
                seen |= kept
        if progress:
            progress(1)
    for slug, meeting in existing.items():
        if slug not in seen and meeting.active:
            service.withdraw_meeting(session, slug=slug, reason=f"no longer in the {source} feed", by=f"feed:{source}")
            report.withdrawn += 1
    report.unknown_types = dict(unknown.most_common())
    report.timezone_mismatch = dict(mismatched.most_common())
    return report


def _apply(session: Session, report: ImportReport, meeting_in: MeetingIn, meeting: Meeting | None, source: str,
           geocoder: Geocoder | None) -> None:
    if meeting is None:
        other = session.scalar(select(Meeting.source).where(Meeting.slug == meeting_in.slug))
        if other is not None or session.scalar(select(Meeting.id).where(Meeting.slug == meeting_in.slug)):
            raise service.MeetingExists(f"slug {meeting_in.slug!r} belongs to another source ({other or 'entered by hand'})")
        with session.begin_nested():
            service.create_meeting(session, meeting_in=meeting_in, source=source, geocoder=geocoder, by=f"feed:{source}")
        report.created += 1
    elif not meeting.active:
        with session.begin_nested():
            service.create_meeting(session, meeting_in=meeting_in, source=source, geocoder=geocoder, by=f"feed:{source}")
        report.updated += 1
    else:
        with session.begin_nested():
            _, changed = service.update_meeting(session, slug=meeting.slug, meeting_in=meeting_in, geocoder=geocoder,
                                                by=f"feed:{source}")
        if changed:
            report.updated += 1
        else:
            report.unchanged += 1


def _approximate(meeting: Meeting) -> str | None:
    """The spec's ``approximate`` (is the address only an area?), which TSML UI reads to tell in person from not.

    As the feed stated it; nothing when an imported row did not say (TSML UI then judges the address as it did
    the original's); for meetings entered here, from how they are attended: an online-only or inactive meeting's
    address is an area, an in-person or hybrid one's a place.
    """
    if meeting.address_approximate is not None:
        return "yes" if meeting.address_approximate else "no"
    if meeting.source is not None:
        return None
    return "yes" if meeting.attendance_option in ("online", "inactive") else "no"


def export_row(meeting: Meeting) -> dict:
    """A meeting as a Meeting Guide feed entry (empty fields left out)."""
    row = {name: getattr(meeting, name) for name in EXPORT_FIELDS}
    row["types"] = [*meeting.types, *meeting.unknown_types]  # codes the spec lacks go back out as they came in
    row = {k: v for k, v in row.items() if v not in (None, "", [])}
    approximate = _approximate(meeting)
    if approximate is not None:
        row["approximate"] = approximate
    row["updated"] = (meeting.listing_updated or meeting.updated).astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    row["fellowship"] = meeting.fellowship
    if meeting.postcode:
        row["postcode"] = meeting.postcode
    row.update(schedule_export(meeting))
    return row


def _days_together(rows: list[dict], meetings: list[Meeting]) -> list[dict]:
    """A feed row that listed several days was imported as one meeting per day: it goes out as that one row
    again (its slug, ``day`` a list), as long as its days still say the same apart from the day."""
    groups: dict[tuple, list[int]] = {}
    for index, meeting in enumerate(meetings):
        if meeting.feed_slug:
            groups.setdefault((meeting.source, meeting.feed_slug), []).append(index)
    merged: dict[int, dict] = {}
    dropped: set[int] = set()
    for (_source, feed_slug), indexes in groups.items():
        same = [{k: v for k, v in rows[i].items() if k not in ("slug", "day", "updated")} for i in indexes]
        if len(indexes) < 2 or any(other != same[0] for other in same[1:]):
            continue
        days = sorted(rows[i]["day"] for i in indexes)
        updated = max(rows[i]["updated"] for i in indexes)
        merged[indexes[0]] = {**rows[indexes[0]], "slug": feed_slug, "day": days, "updated": updated}
        dropped.update(indexes[1:])
    return [merged.get(i, row) for i, row in enumerate(rows) if i not in dropped]


def export_feed(session: Session) -> list[dict]:
    meetings = session.scalars(select(Meeting).where(Meeting.active.is_(True)).order_by(Meeting.day, Meeting.time,
                                                                                        Meeting.slug)).all()
    return _days_together([export_row(m) for m in meetings], meetings)
