from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator, model_validator

from services.directory.geocode import normalise_postcode
from services.directory.reference import TYPE_NAMES
from shared.events import AttendanceOption, MeetingException
from shared.meeting_time import describe, describe_exception
from shared.types import InputBool, InputFloat, InputInt

TIME_PATTERN = r"^([01]\d|2[0-3]):[0-5]\d$"
SLUG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
FELLOWSHIP_PATTERN = r"^[a-z0-9][a-z0-9-]*$"
Text = str | None


def _opt(max_length: int):
    return Field(None, max_length=max_length)


class MeetingExceptionIn(BaseModel):
    """One occurrence closed (``closed``: true, with a short public note) or changed (``time``, a note)."""

    model_config = ConfigDict(extra="forbid")

    date: dt.date = Field(description="The occurrence's date (YYYY-MM-DD)")
    closed: InputBool = True
    time: str | None = Field(None, pattern=TIME_PATTERN, description="This occurrence's start (HH:MM), when changed")
    end_time: str | None = Field(None, pattern=TIME_PATTERN)
    note: Text = Field(None, max_length=200, description="Short and public, e.g. Christmas")

    @model_validator(mode="after")
    def closed_or_changed(self) -> MeetingExceptionIn:
        self.note = (self.note or "").strip() or None
        if self.closed and (self.time or self.end_time):
            raise ValueError(f"{self.date.isoformat()}: a closed date has no start time (leave time out, "
                             "or set closed to false to change the time)")
        if not self.closed and not (self.time or self.note):
            raise ValueError(f"{self.date.isoformat()}: a changed occurrence needs another start time or a note")
        return self


class ScheduleFields(BaseModel):
    """A meeting's schedule when not simply weekly (shared/meeting_time.py), and its dated exceptions."""

    rrule: str | None = Field(None, max_length=200, description="RFC 5545 RRULE value, e.g. FREQ=WEEKLY;INTERVAL=2;"
                              "BYDAY=TU (every other Tuesday) or FREQ=MONTHLY;BYDAY=1TU (first Tuesday); none: weekly")
    dtstart: dt.date | None = Field(None, description="The rule's first date; without a rule, a one-off meeting's date")
    exceptions: list[MeetingExceptionIn] = Field(default_factory=list, max_length=200,
                                                 description="Dated closures and changes of single occurrences")

    @field_validator("rrule")
    @classmethod
    def blank_rule(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None


class MeetingIn(ScheduleFields):
    """A meeting as an admin (or a feed import) states it: Meeting Guide fields + UK extras + schedule."""

    model_config = ConfigDict(extra="forbid")

    slug: str = Field(min_length=1, max_length=200, pattern=SLUG_PATTERN)
    name: str = Field(min_length=1, max_length=300)
    fellowship: str = Field(min_length=1, max_length=64, pattern=FELLOWSHIP_PATTERN)
    day: InputInt | None = Field(None, ge=0, le=6, description="0-6, Sunday = 0; none for appointment meetings")
    time: str | None = Field(None, pattern=TIME_PATTERN, description="HH:MM local")
    end_time: str | None = Field(None, pattern=TIME_PATTERN)
    timezone: str = "Europe/London"
    types: list[str] = Field(default_factory=list, description="Meeting Guide type codes")
    unknown_types: list[str] = Field(default_factory=list, description="Codes from a feed that the spec does not define")
    notes: Text = _opt(5000)
    attendance_option: AttendanceOption = "in_person"
    location: Text = _opt(300)
    location_notes: Text = _opt(5000)
    formatted_address: Text = _opt(1000)
    address: Text = _opt(300)
    city: Text = _opt(120)
    state: Text = _opt(120)
    postal_code: Text = _opt(20)
    country: Text = _opt(80)
    region: Text = _opt(120)
    sub_region: Text = _opt(120)
    district: Text = _opt(120)
    postcode: Text = Field(None, max_length=10, description="UK postcode, full or outward code")
    latitude: InputFloat | None = Field(None, ge=-90, le=90)
    longitude: InputFloat | None = Field(None, ge=-180, le=180)
    approximate: InputBool = False
    conference_url: Text = _opt(2000)
    conference_url_notes: Text = _opt(2000)
    conference_phone: Text = _opt(64)
    conference_phone_notes: Text = _opt(2000)
    group: Text = _opt(300)
    group_notes: Text = _opt(5000)
    website: Text = _opt(2000)
    email: str | None = Field(None, max_length=200, pattern=EMAIL_PATTERN)
    phone: Text = _opt(64)
    venmo: Text = _opt(100)
    square: Text = _opt(100)
    paypal: Text = _opt(200)
    url: Text = _opt(2000)
    feedback_url: Text = _opt(2000)
    site_id: Text = _opt(64)
    booking_required: InputBool = False
    peer_led: InputBool = False
    partnership: InputBool = False
    facilitator_name: Text = _opt(200)
    facilitator_contact: Text = Field(None, max_length=200, description="Phone or email; encrypted at rest")
    # --- Meeting Guide fields a feed carries, kept so that the export says what the import said (feeds.py) ---
    regions: list[Annotated[str, Field(min_length=1, max_length=120)]] = Field(
        default_factory=list, max_length=10, description="Hierarchical regions, most general first")
    sub_sub_region: Text = _opt(120)
    address_approximate: bool | None = Field(
        None, strict=True, description="The feed's `approximate`: is the address only an area? None: not stated")
    listing_updated: dt.datetime | None = Field(None, description="The feed's `updated` (UTC)")
    feed_slug: str | None = Field(None, max_length=200, pattern=SLUG_PATTERN,
                                  description="Slug of the multi-day feed row this meeting is one day of")
    edit_url: Text = _opt(2000)
    homegroup_online: Text = _opt(100)
    feedback_emails: list[Annotated[str, Field(max_length=200, pattern=EMAIL_PATTERN)]] = Field(
        default_factory=list, max_length=20)
    entity: Text = _opt(300)
    entity_email: str | None = Field(None, max_length=200, pattern=EMAIL_PATTERN)
    entity_location: Text = _opt(300)
    entity_logo: Text = _opt(2000)
    entity_phone: Text = _opt(64)
    entity_url: Text = _opt(2000)
    contact_1_name: Text = _opt(200)
    contact_1_email: str | None = Field(None, max_length=200, pattern=EMAIL_PATTERN)
    contact_1_phone: Text = _opt(64)
    contact_2_name: Text = _opt(200)
    contact_2_email: str | None = Field(None, max_length=200, pattern=EMAIL_PATTERN)
    contact_2_phone: Text = _opt(64)
    contact_3_name: Text = _opt(200)
    contact_3_email: str | None = Field(None, max_length=200, pattern=EMAIL_PATTERN)
    contact_3_phone: Text = _opt(64)
    # --- end of the feed round-trip fields ---

    @field_validator("listing_updated", mode="before")
    @classmethod
    def date_and_time(cls, value):
        """A date and time, not a number of seconds (which pydantic would otherwise take)."""
        if isinstance(value, int | float):
            raise ValueError("give a date and time such as 2026-01-05T10:00:00Z")
        return value

    @field_validator("types")
    @classmethod
    def known_types(cls, value: list[str]) -> list[str]:
        unknown = [t for t in value if t not in TYPE_NAMES]
        if unknown:
            raise ValueError(f"unknown Meeting Guide type code(s): {', '.join(unknown)}")
        return list(dict.fromkeys(value))

    @field_validator("timezone")
    @classmethod
    def iana_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"{value!r} is not an IANA timezone such as Europe/London") from exc
        return value

    @field_validator("postcode")
    @classmethod
    def uk_postcode(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        normal = normalise_postcode(value)
        if normal is None:
            raise ValueError(f"{value!r} is not a UK postcode")
        return normal

    @field_validator("website", "url", "conference_url", "edit_url", "entity_logo", "entity_url")
    @classmethod
    def web_address(cls, value: str | None) -> str | None:
        if value is not None and value.strip() and not re.match(r"^https?://", value.strip(), re.I):
            raise ValueError("must be an http(s) address")
        return value or None

    @field_validator("feedback_url")
    @classmethod
    def feedback_address(cls, value: str | None) -> str | None:
        """The spec allows a mailto: link here as well as a web address."""
        if value is not None and value.strip() and not re.match(r"^(https?://|mailto:)", value.strip(), re.I):
            raise ValueError("must be an http(s) address or a mailto: link")
        return value or None


class TypeName(BaseModel):
    code: str
    name: str


class MeetingOut(BaseModel):
    """A meeting as anyone may see it (no facilitator contact)."""

    model_config = ConfigDict(from_attributes=True)

    slug: str
    name: str
    fellowship: str
    day: int | None
    time: str | None
    end_time: str | None
    timezone: str
    types: list[str]
    unknown_types: list[str]
    notes: str | None
    attendance_option: str
    location: str | None
    location_notes: str | None
    formatted_address: str | None
    address: str | None
    city: str | None
    state: str | None
    postal_code: str | None
    country: str | None
    region: str | None
    sub_region: str | None
    district: str | None
    postcode: str | None
    latitude: float | None
    longitude: float | None
    approximate: bool
    conference_url: str | None
    conference_url_notes: str | None
    conference_phone: str | None
    conference_phone_notes: str | None
    group: str | None
    group_notes: str | None
    website: str | None
    email: str | None
    phone: str | None
    venmo: str | None
    square: str | None
    paypal: str | None
    url: str | None
    feedback_url: str | None
    site_id: str | None
    booking_required: bool
    peer_led: bool
    partnership: bool
    source: str | None
    active: bool
    updated: dt.datetime
    rrule: str | None = None
    dtstart: dt.date | None = None
    exceptions: list[MeetingException] = []

    @computed_field
    @property
    def type_names(self) -> list[TypeName]:
        return [TypeName(code=t, name=TYPE_NAMES[t]) for t in self.types if t in TYPE_NAMES]

    @computed_field
    @property
    def schedule(self) -> str | None:
        """In plain English: "Every other Tuesday", "First Tuesday of the month", "One-off: Sat 12 December"."""
        return describe(self)

    @computed_field
    @property
    def exceptions_text(self) -> list[str]:
        """Each dated exception in plain English: "Closed Fri 25 December: Christmas"."""
        return [describe_exception(e.model_dump()) for e in self.exceptions]


class MeetingAdminOut(MeetingOut):
    facilitator_name: str | None
    facilitator_contact: str | None
    withdrawn_reason: str | None
    # --- the feed round-trip fields (MeetingIn), for admins to see what the feed will say ---
    regions: list[str] = []
    sub_sub_region: str | None = None
    address_approximate: bool | None = None
    listing_updated: dt.datetime | None = None
    feed_slug: str | None = None
    edit_url: str | None = None
    homegroup_online: str | None = None
    feedback_emails: list[str] = []
    entity: str | None = None
    entity_email: str | None = None
    entity_location: str | None = None
    entity_logo: str | None = None
    entity_phone: str | None = None
    entity_url: str | None = None
    contact_1_name: str | None = None
    contact_1_email: str | None = None
    contact_1_phone: str | None = None
    contact_2_name: str | None = None
    contact_2_email: str | None = None
    contact_2_phone: str | None = None
    contact_3_name: str | None = None
    contact_3_email: str | None = None
    contact_3_phone: str | None = None


class MeetingResult(MeetingOut):
    distance_km: float | None = None
    # ISO 8601 with the offset in force then ("+01:00" in summer time); None by appointment.
    next_start_local: str | None = None
    next_start_utc: str | None = None
    # "in_progress" (started and not yet ended) or "starting_soon" (within the hour); None otherwise.
    happening: Literal["in_progress", "starting_soon"] | None = None
    # That next occurrence's own note or changed time, and the closed dates it skips ("closed 25 Dec — next 1 Jan").
    next_note: str | None = None
    next_changed: bool = False
    closed_before_next: list[MeetingException] = []


class MeetingPage(BaseModel):
    total: int
    limit: int
    offset: int
    near: dict | None = None
    results: list[MeetingResult]
    # Near a place, when fewer than 3 are within the radius: the nearest beyond it (up to 200 km).
    beyond: list[MeetingResult] = []


class WithdrawIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(None, max_length=500)


class SearchIn(BaseModel):
    """The filters of a meeting search (validated by the API's query parameters)."""

    near: str | None = None
    radius_km: float = Field(10.0, gt=0, le=200)
    day: InputInt | None = Field(None, ge=0, le=6)
    days: list[int] = []  # any of these days (with ``day``)
    starts_after: str | None = Field(None, pattern=TIME_PATTERN)
    starts_before: str | None = Field(None, pattern=TIME_PATTERN)
    fellowship: str | None = None
    types: list[str] = []
    attendance: Literal["in_person", "hybrid", "online"] | None = None
    q: str | None = Field(None, max_length=200)
    limit: int = Field(20, ge=1, le=100)
    offset: int = Field(0, ge=0)
    # "distance" (the default near a place) or "soonest" (next start from ``now``); else by day of the week.
    sort: Literal["distance", "soonest"] | None = None
    now: dt.datetime | None = None  # the moment "next occurrence" is counted from (tests)
    on_date: dt.date | None = None  # meetings held that date: a scheduled meeting only if it meets (open) then


class SiteIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$")
    name: str = Field(min_length=1, max_length=200)
    host_agency: str = Field(min_length=1, max_length=200)
    region: str = Field(min_length=1, max_length=100)
    champion_name: str | None = Field(None, max_length=200)
    champion_email: str | None = Field(None, max_length=200, pattern=EMAIL_PATTERN)
    champion_phone: str | None = Field(None, max_length=40)
    address: str | None = Field(None, max_length=500)
    postcode: str | None = Field(None, max_length=10)
    active: InputBool = True

    @field_validator("postcode")
    @classmethod
    def uk_postcode(cls, value: str | None) -> str | None:
        return MeetingIn.uk_postcode(value)


class SiteOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    host_agency: str
    region: str
    champion_name: str | None
    champion_email: str | None
    champion_phone: str | None
    address: str | None
    postcode: str | None
    active: bool


class FeedUrlIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(pattern=r"^https?://", max_length=2000)


class ImportRejection(BaseModel):
    row: int  # 1-based position in the feed
    slug: str | None
    reason: str


class ImportReport(BaseModel):
    source: str
    rows: int
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    withdrawn: int = 0
    rejected: list[ImportRejection] = []
    unknown_types: dict[str, int] = {}
    # Rows imported without a value the feed gave (an email that is not one, a link that is not a web address...).
    left_out: list[ImportRejection] = []
    # Rows refused because their coordinates lie in another timezone than theirs: that timezone -> how many.
    timezone_mismatch: dict[str, int] = {}
    # What stored meetings a rejected row kept: it is shown as it was, not withdrawn.
    kept_as_they_were: int = 0


class FeedSourceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
                    description="The source name its meetings carry, e.g. sussex-aa")
    url: str | None = Field(None, pattern=r"^https?://", max_length=2000, description="None: uploaded by hand")
    fellowship: str = Field("aa", min_length=1, max_length=64, pattern=FELLOWSHIP_PATTERN)
    timezone: str = Field("Europe/London", max_length=64)
    every_hours: float | None = Field(None, ge=1, le=24 * 28, description="Re-import this often (needs a url)")


class FeedSourceOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    url: str | None
    fellowship: str
    timezone: str
    every_hours: float | None
    next_run_at: dt.datetime | None
    active: bool


class ImportRunOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    source_id: str
    started_at: dt.datetime
    trigger: str
    by: str
    status: str = Field(description="applied, held (waiting for an admin), failed, confirmed or discarded")
    report: dict | None
    error: str | None
    live_before: int
    decided_by: str | None
    decided_at: dt.datetime | None
