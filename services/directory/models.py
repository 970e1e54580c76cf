from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, Boolean, Date, Float, Index, Integer, SmallInteger, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.directory.config import get_settings
from shared.crypto import EncryptedText, FieldCipher, cipher_for
from shared.db import UTCDateTime, make_metadata
from shared.events import utcnow


def at_rest_cipher() -> FieldCipher:
    """Personal data at rest: site champions' and facilitators' details (DIRECTORY_ENCRYPTION_KEYS)."""
    return cipher_for(get_settings().encryption_keys)


class Base(DeclarativeBase):
    metadata = make_metadata()


class Site(Base):
    """A pilot site: the drug and alcohol service (host agency) running a FAMA pilot."""

    __tablename__ = "sites"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    host_agency: Mapped[str] = mapped_column(String(200))
    region: Mapped[str] = mapped_column(String(100), index=True)
    # The champion is a member of staff; their contact details are still encrypted at rest.
    champion_name: Mapped[str | None] = mapped_column(EncryptedText(at_rest_cipher))
    champion_email: Mapped[str | None] = mapped_column(EncryptedText(at_rest_cipher))
    champion_phone: Mapped[str | None] = mapped_column(EncryptedText(at_rest_cipher))
    address: Mapped[str | None] = mapped_column(Text)
    postcode: Mapped[str | None] = mapped_column(String(10))
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class Meeting(Base):
    """A mutual-aid meeting, keyed by its Meeting Guide slug (code4recovery/spec fields + UK extras)."""

    __tablename__ = "meetings"
    __table_args__ = (
        Index("ix_meetings_cell", "cell"),
        Index("ix_meetings_active_day", "active", "day", "time"),
        Index("ix_meetings_source", "source"),
        Index("ix_meetings_weekly", "weekly"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(200), unique=True)
    name: Mapped[str] = mapped_column(String(300))
    fellowship: Mapped[str] = mapped_column(String(64), index=True)
    day: Mapped[int | None] = mapped_column(Integer)
    time: Mapped[str | None] = mapped_column(String(5))
    end_time: Mapped[str | None] = mapped_column(String(5))
    timezone: Mapped[str] = mapped_column(String(64), default="Europe/London")
    types: Mapped[list[str]] = mapped_column(JSON, default=list)
    # "|O|D|": lets "all these types" be a portable LIKE filter in SQL.
    types_key: Mapped[str] = mapped_column(String(400), default="|")
    # Type codes a feed used that the Meeting Guide spec does not define, kept aside.
    unknown_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    notes: Mapped[str | None] = mapped_column(Text)
    attendance_option: Mapped[str] = mapped_column(String(16), default="in_person")
    location: Mapped[str | None] = mapped_column(String(300))
    location_notes: Mapped[str | None] = mapped_column(Text)
    formatted_address: Mapped[str | None] = mapped_column(Text)
    address: Mapped[str | None] = mapped_column(String(300))
    city: Mapped[str | None] = mapped_column(String(120))
    state: Mapped[str | None] = mapped_column(String(120))
    postal_code: Mapped[str | None] = mapped_column(String(20))
    country: Mapped[str | None] = mapped_column(String(80))
    region: Mapped[str | None] = mapped_column(String(120))
    sub_region: Mapped[str | None] = mapped_column(String(120))
    district: Mapped[str | None] = mapped_column(String(120))
    postcode: Mapped[str | None] = mapped_column(String(10))
    latitude: Mapped[float | None] = mapped_column(Float)
    longitude: Mapped[float | None] = mapped_column(Float)
    approximate: Mapped[bool] = mapped_column(Boolean, default=False)
    # Spatial index: a 0.1 degree grid cell (see search.grid_cell), None without coordinates
    # and for online-only meetings, which are not "near" anything.
    cell: Mapped[int | None] = mapped_column(Integer)
    conference_url: Mapped[str | None] = mapped_column(Text)
    conference_url_notes: Mapped[str | None] = mapped_column(Text)
    conference_phone: Mapped[str | None] = mapped_column(String(64))
    conference_phone_notes: Mapped[str | None] = mapped_column(Text)
    group: Mapped[str | None] = mapped_column("group_name", String(300))
    group_notes: Mapped[str | None] = mapped_column(Text)
    website: Mapped[str | None] = mapped_column(Text)
    email: Mapped[str | None] = mapped_column(String(200))
    phone: Mapped[str | None] = mapped_column(String(64))
    venmo: Mapped[str | None] = mapped_column(String(100))
    square: Mapped[str | None] = mapped_column(String(100))
    paypal: Mapped[str | None] = mapped_column(String(200))
    url: Mapped[str | None] = mapped_column(Text)
    feedback_url: Mapped[str | None] = mapped_column(Text)
    # Schedule when not simply weekly on ``day`` (shared/meeting_time.py): an RFC 5545 RRULE value and
    # its first date, or a first date alone (one-off); dated exceptions [{"date", "closed", "time",
    # "end_time", "note"}]. ``weekly``: none of these, so search orders it in SQL; ``last_date``: the
    # last scheduled date of a schedule that ends (None: it does not), so ended ones leave search.
    rrule: Mapped[str | None] = mapped_column(String(200))
    dtstart: Mapped[dt.date | None] = mapped_column(Date)
    exceptions: Mapped[list[dict]] = mapped_column(JSON, default=list)
    weekly: Mapped[bool] = mapped_column(Boolean, default=True)
    last_date: Mapped[dt.date | None] = mapped_column(Date)
    # UK extras.
    site_id: Mapped[str | None] = mapped_column(String(64), index=True)
    booking_required: Mapped[bool] = mapped_column(Boolean, default=False)
    peer_led: Mapped[bool] = mapped_column(Boolean, default=False)
    partnership: Mapped[bool] = mapped_column(Boolean, default=False)
    facilitator_name: Mapped[str | None] = mapped_column(EncryptedText(at_rest_cipher))
    facilitator_contact: Mapped[str | None] = mapped_column(EncryptedText(at_rest_cipher))
    # Feed source name for imports (matching is on slug within a source); None = entered here.
    source: Mapped[str | None] = mapped_column(String(100))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    withdrawn_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)

    # --- Meeting Guide fields kept so that an imported feed is exported as it came (feeds.py) ---
    # Hierarchical regions, most general first (the spec's ``regions``), and TSML UI's third level.
    regions: Mapped[list[str]] = mapped_column(JSON, default=list)
    sub_sub_region: Mapped[str | None] = mapped_column(String(120))
    # The feed's ``approximate`` as stated (is the address only an area?); None: it did not say.
    # ``approximate`` above is FAMA's own flag for an approximate map position.
    address_approximate: Mapped[bool | None] = mapped_column(Boolean)
    # The feed's ``updated`` (when the listing last changed at its source); None: entered here, or edited here since.
    listing_updated: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    # The slug of the feed row this meeting is one day of, when that row listed several days.
    feed_slug: Mapped[str | None] = mapped_column(String(200))
    edit_url: Mapped[str | None] = mapped_column(Text)
    homegroup_online: Mapped[str | None] = mapped_column(String(100))
    feedback_emails: Mapped[list[str]] = mapped_column(JSON, default=list)
    entity: Mapped[str | None] = mapped_column(String(300))
    entity_email: Mapped[str | None] = mapped_column(String(200))
    entity_location: Mapped[str | None] = mapped_column(String(300))
    entity_logo: Mapped[str | None] = mapped_column(Text)
    entity_phone: Mapped[str | None] = mapped_column(String(64))
    entity_url: Mapped[str | None] = mapped_column(Text)
    # A meeting's public contacts as its feed lists them (first names only, per the spec): encrypted at rest.
    contact_1_name: Mapped[str | None] = mapped_column(EncryptedText(at_rest_cipher))
    contact_1_email: Mapped[str | None] = mapped_column(EncryptedText(at_rest_cipher))
    contact_1_phone: Mapped[str | None] = mapped_column(EncryptedText(at_rest_cipher))
    contact_2_name: Mapped[str | None] = mapped_column(EncryptedText(at_rest_cipher))
    contact_2_email: Mapped[str | None] = mapped_column(EncryptedText(at_rest_cipher))
    contact_2_phone: Mapped[str | None] = mapped_column(EncryptedText(at_rest_cipher))
    contact_3_name: Mapped[str | None] = mapped_column(EncryptedText(at_rest_cipher))
    contact_3_email: Mapped[str | None] = mapped_column(EncryptedText(at_rest_cipher))
    contact_3_phone: Mapped[str | None] = mapped_column(EncryptedText(at_rest_cipher))
    # --- end of the feed round-trip fields ---


class EngagementFact(Base):
    """One counted fact (a referral reaching a stage, a reminder sent...), counted once ever.

    The key makes a replayed or re-sent event, or a second event stating the same fact,
    count nothing twice, whatever order events arrive in.
    """

    __tablename__ = "engagement_facts"

    subject: Mapped[str] = mapped_column(String(64), primary_key=True)  # referral or reminder id
    metric: Mapped[str] = mapped_column(String(40), primary_key=True)
    site_id: Mapped[str] = mapped_column(String(64))
    fellowship: Mapped[str] = mapped_column(String(64))
    week_start: Mapped[dt.date] = mapped_column(Date)
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class EngagementCount(Base):
    """Aggregate counter per site, fellowship, ISO week (its Monday) and metric.

    ``rounding_point`` (0-4, drawn at random when the row is made and never shown) decides
    which way the count is rounded for commissioners: see ``engagement.rounded``.
    """

    __tablename__ = "engagement_counts"

    site_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    fellowship: Mapped[str] = mapped_column(String(64), primary_key=True)
    week_start: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    metric: Mapped[str] = mapped_column(String(40), primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)
    rounding_point: Mapped[int] = mapped_column(SmallInteger)


class FeedSource(Base):
    """A Meeting Guide feed the directory re-imports on its schedule (a URL), or one uploaded by hand."""

    __tablename__ = "feed_sources"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)  # the meetings' ``source``
    url: Mapped[str | None] = mapped_column(Text)
    fellowship: Mapped[str] = mapped_column(String(64))
    timezone: Mapped[str] = mapped_column(String(64))
    # Hours between imports; None: only when an admin imports or uploads.
    every_hours: Mapped[float | None] = mapped_column(Float)
    next_run_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), index=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class ImportRun(Base):
    """One import of a feed source and its report. A run that would withdraw most of the source's
    meetings is held (nothing applied) until an admin confirms or discards it."""

    __tablename__ = "import_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source_id: Mapped[str] = mapped_column(String(100), index=True)
    started_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    trigger: Mapped[str] = mapped_column(String(16))  # schedule, admin, upload
    by: Mapped[str] = mapped_column(String(200))
    # applied, held, failed, confirmed, discarded
    status: Mapped[str] = mapped_column(String(16), index=True)
    report: Mapped[dict | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    live_before: Mapped[int] = mapped_column(Integer, default=0)
    # A held run's feed rows (public meeting data), kept only until an admin decides.
    held_rows: Mapped[list | None] = mapped_column(JSON)
    decided_by: Mapped[str | None] = mapped_column(String(200))
    decided_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class MeetingChange(Base):
    """The history of a meeting: who created, changed, withdrew or re-published it, when, and which fields."""

    __tablename__ = "meeting_changes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    slug: Mapped[str] = mapped_column(String(200), index=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    # A staff member's subject, or feed:<source> for an import.
    by: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(16))  # created, updated, withdrawn, republished
    fields: Mapped[str | None] = mapped_column(String(1000))
    reason: Mapped[str | None] = mapped_column(Text)


class ChangeRequest(Base):
    """Someone's report of a problem with a meeting ("it has moved"), for an admin to resolve."""

    __tablename__ = "change_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    meeting_slug: Mapped[str] = mapped_column(String(200), index=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    kind: Mapped[str] = mapped_column(String(32))
    description: Mapped[str] = mapped_column(Text)
    # "public", or the subject of the staff member who reported it from the desk.
    reported_by: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="open", index=True)  # open, resolved, dismissed
    resolved_by: Mapped[str | None] = mapped_column(String(200))
    resolved_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    resolution: Mapped[str | None] = mapped_column(Text)


class Postcode(Base):
    """A live UK postcode and its centre, loaded from the ONS Postcode Directory (``fama directory postcodes``).

    Empty unless a deployment loads the directory; then full postcodes are placed precisely and
    one that is not in it is refused.
    """

    __tablename__ = "postcodes"

    postcode: Mapped[str] = mapped_column(String(8), primary_key=True)  # "CR0 1AB": normalise_postcode()
    latitude: Mapped[float] = mapped_column(Float)
    longitude: Mapped[float] = mapped_column(Float)
