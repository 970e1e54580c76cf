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

import ipaddress
import json
import re
import socket
import time
from collections import Counter
from collections.abc import Callable

import httpx
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
)
# Spec fields exported as they are stored.
EXPORT_FIELDS = (
    "name", "slug", "day", "time", "end_time", "timezone", "types", "notes", "location", "location_notes",
    "formatted_address", "address", "city", "state", "postal_code", "country", "region", "sub_region", "district",
    "latitude", "longitude", "conference_url", "conference_url_notes", "conference_phone", "conference_phone_notes",
    "group", "group_notes", "website", "email", "phone", "venmo", "square", "paypal", "url", "feedback_url",
    "attendance_option",
)


class FeedError(DomainError, ValueError):
    """The feed as a whole cannot be read: nothing is imported."""

    def body(self) -> dict:
        return {"detail": str(self), "errors": [{"field": "feed", "message": str(self), "type": "feed"}]}


class RowError(ValueError):
    pass


def load_feed(text: str | bytes) -> list:
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FeedError(f"the feed is not valid JSON: {exc}") from exc
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


def _number(value, name: str) -> float | None:
    if value is None or value == "":
        return None
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise RowError(f"{name} {value!r} is not a number") from exc


def _text(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, list):
        value = ", ".join(str(v) for v in value)
    text = str(value).strip()
    return text or None


def parse_row(row, *, fellowship: str, timezone: str) -> list[MeetingIn]:
    """One feed row -> one MeetingIn per day it is held on."""
    if not isinstance(row, dict):
        raise RowError(f"a meeting is a JSON object, this row is a {type(row).__name__}")
    slug = _text(row.get("slug"))
    if not slug:
        raise RowError("slug is missing")
    if not _text(row.get("name")):
        raise RowError("name is missing")
    raw_types = row.get("types") or []
    if isinstance(raw_types, str):
        raw_types = [t.strip() for t in raw_types.split(",")]
    codes = [str(t).strip() for t in raw_types if str(t).strip()]
    fields = {name: _text(row.get(name)) for name in TEXT_FIELDS}
    fields["name"] = fields["name"][:300]
    attendance = _text(row.get("attendance_option"))
    if attendance is None:
        online = bool(fields["conference_url"] or fields["conference_phone"])
        located = bool(fields["formatted_address"] or fields["address"] or row.get("latitude"))
        attendance = ("hybrid" if located else "online") if online else "in_person"
    days = parse_days(row.get("day"))
    start, end = parse_time(row.get("time")), parse_time(row.get("end_time"))
    if days != [None] and start is None:
        raise RowError("time is missing for a meeting held on a day")
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
        "approximate": _flag(row.get("approximate")),
        "postcode": normalise_postcode(_text(row.get("postcode")) or ""),
    }
    if base["email"] and "@" not in base["email"]:
        base["email"] = None
    for name in ("website", "url", "conference_url", "feedback_url"):
        if base[name] and not re.match(r"^https?://", base[name], re.I):
            base[name] = None  # not a web address: dropped rather than losing the meeting
    base.update(schedule_import(row))
    meetings = []
    for day in days:
        meeting_slug = slug if len(days) == 1 else f"{slug}-{DAY_NAMES[day]}"
        try:
            meetings.append(MeetingIn(**base, slug=meeting_slug, day=day))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise RowError(f"{where}: {first['msg']}") from exc
    return meetings


def import_feed(session: Session, *, rows: list, source: str, fellowship: str = "aa", timezone: str = "Europe/London",
                geocoder: Geocoder | None = None, progress: Callable[[int], None] | None = None) -> ImportReport:
    """Apply a parsed feed for ``source`` in the caller's transaction and report what happened."""
    report = ImportReport(source=source, rows=len(rows))
    unknown: Counter[str] = Counter()
    existing = {m.slug: m for m in session.scalars(select(Meeting).where(Meeting.source == source))}
    seen: set[str] = set()
    for number, row in enumerate(rows, start=1):
        slug = row.get("slug") if isinstance(row, dict) else None
        try:
            meetings = parse_row(row, fellowship=fellowship, timezone=timezone)
            for meeting_in in meetings:
                if meeting_in.slug in seen:
                    raise RowError(f"slug {meeting_in.slug!r} appears twice in the feed")
            for meeting_in in meetings:
                seen.add(meeting_in.slug)
                unknown.update(meeting_in.unknown_types)
                _apply(session, report, meeting_in, existing.get(meeting_in.slug), source, geocoder)
        except (RowError, service.InvalidInput, service.MeetingExists) as exc:
            report.rejected.append(ImportRejection(row=number, slug=str(slug) if slug else None, reason=str(exc)))
        if progress:
            progress(1)
    for slug, meeting in existing.items():
        if slug not in seen and meeting.active:
            service.withdraw_meeting(session, slug=slug, reason=f"no longer in the {source} feed", by=f"feed:{source}")
            report.withdrawn += 1
    report.unknown_types = dict(unknown.most_common())
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


def export_row(meeting: Meeting) -> dict:
    """A meeting as a Meeting Guide feed entry (empty fields left out)."""
    row = {name: getattr(meeting, name) for name in EXPORT_FIELDS}
    row = {k: v for k, v in row.items() if v not in (None, "", [])}
    if meeting.approximate:
        row["approximate"] = "yes"
    elif meeting.latitude is not None:
        row["approximate"] = "no"
    row["updated"] = meeting.updated.strftime("%Y-%m-%d %H:%M:%S")
    row["fellowship"] = meeting.fellowship
    if meeting.postcode:
        row["postcode"] = meeting.postcode
    row.update(schedule_export(meeting))
    return row


def export_feed(session: Session) -> list[dict]:
    meetings = session.scalars(select(Meeting).where(Meeting.active.is_(True)).order_by(Meeting.day, Meeting.time,
                                                                                        Meeting.slug))
    return [export_row(m) for m in meetings]
