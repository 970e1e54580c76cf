"""The event envelope and the catalogue of event types, payloads and subscribers.

Events are past-tense facts. Every event travels in one envelope; its payload is validated
against the pydantic model registered for its type. ``CATALOGUE`` is the one place that
says which service produces each event, which services receive it, which payload fields
are personal and which subscribers may receive those.

Every envelope is signed by its producer (``sign``: HMAC-SHA256 over the canonical JSON of
the envelope, with the producer's newest key); ``refusal`` says why a consumer must refuse
a message (unknown type, a producer other than the catalogue's, not a subscriber, a
signature no key of that producer makes), so writing to Redis is not enough to change data.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import uuid
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

AttendanceOption = Literal["in_person", "hybrid", "online", "inactive"]

# FHIR Task statuses used for referrals.
REFERRAL_STATUSES = (
    "requested", "accepted", "in-progress", "on-hold", "completed", "failed", "cancelled", "entered-in-error",
)
ENDED_STATUSES = ("completed", "failed", "cancelled", "entered-in-error")


class Stage(StrEnum):
    """FAMA stage: the referral's business status, shared by referrals and the counters."""

    information_given = "information-given"  # requested: information and choice, consent recorded
    contact_arranged = "contact-arranged"  # accepted: e.g. a peer will accompany
    first_meeting_planned = "first-meeting-planned"  # in-progress
    first_meeting_attended = "first-meeting-attended"  # in-progress (accompanied or not)
    followed_up = "followed-up"  # completed
    on_hold = "on-hold"
    did_not_engage = "did-not-engage"  # failed
    declined = "declined"  # cancelled
    entered_in_error = "entered-in-error"


# The kinds of message a reminder row is (ReminderFact.kind), each with the desk's label for it.
# Part of the contract: notifications' registry (services/notifications/kinds.py) gives each its
# timing, wording and priority, the referral desk shows the label.
REMINDER_KIND_LABELS = {
    "day_before": "The day before", "hours_before": "A few hours before",
    "follow_up": "Follow-up after the meeting", "meeting_moved": "Meeting moved", "meeting_cancelled": "Meeting cancelled",
    "confirmation": "Confirmation of the referral", "reply_ack": "Thanks for a reply", "help": "Answer to HELP",
    "opted_in": "Answer to START",
}
# Fellowship codes (MeetingSnapshot.fellowship) and their names: every service names them the same way.
FELLOWSHIP_NAMES: dict[str, str] = {
    "aa": "Alcoholics Anonymous", "na": "Narcotics Anonymous", "ca": "Cocaine Anonymous", "smart": "SMART Recovery",
    "al-anon": "Al-Anon Family Groups", "alateen": "Alateen", "fa": "Families Anonymous",
    "smart-family-friends": "SMART Recovery Family & Friends", "ga": "Gamblers Anonymous",
    "ma": "Marijuana Anonymous", "cma": "Crystal Meth Anonymous", "other": "Other mutual aid",
}
# What a client's YES or NO to the follow-up says about the planned first meeting.
ATTENDANCE_REPORTS = ("attended", "not_attended")


class Payload(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ContactDetails(BaseModel):
    """A client's contact details. Only ever on the broker sealed with the transit key."""

    mobile: str | None = None  # E.164, e.g. +447700900123
    email: str | None = None

    def seal(self, cipher) -> str:
        return cipher.encrypt(self.model_dump_json())

    @classmethod
    def unseal(cls, cipher, token: str) -> ContactDetails:
        return cls.model_validate_json(cipher.decrypt(token))


class MeetingException(Payload):
    """One dated occurrence closed (RFC 5545 EXDATE) or changed (another start time or a note)."""

    date: dt.date
    closed: bool = True
    time: str | None = None  # "HH:MM": this occurrence's start, when changed
    end_time: str | None = None
    note: str | None = None  # short and public ("Christmas", "in the back room this week")


class MeetingSnapshot(Payload):
    """Everything a replica needs to know about a meeting (Meeting Guide fields + UK extras).

    ``rrule``/``dtstart``/``exceptions``: its schedule when not simply weekly on ``day``
    (shared/meeting_time.py says how to read them); events from before they existed parse
    as weekly.
    """

    slug: str
    name: str
    fellowship: str
    day: int | None = None  # 0-6, Sunday = 0; None for appointment-only meetings
    time: str | None = None  # "HH:MM" local
    end_time: str | None = None
    timezone: str = "Europe/London"
    types: list[str] = []
    attendance_option: AttendanceOption = "in_person"
    location: str | None = None
    formatted_address: str | None = None
    postcode: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    conference_url: str | None = None
    conference_url_notes: str | None = None
    conference_phone: str | None = None
    conference_phone_notes: str | None = None
    site_id: str | None = None
    booking_required: bool = False
    active: bool = True
    updated: dt.datetime | None = None
    rrule: str | None = None  # RFC 5545 RRULE value, e.g. FREQ=MONTHLY;BYDAY=1TU
    dtstart: dt.date | None = None  # the rule's first date; alone, a one-off meeting's date
    exceptions: list[MeetingException] = []


class MeetingWithdrawn(Payload):
    slug: str
    reason: str | None = None
    meeting: MeetingSnapshot


class ReferralCreated(Payload):
    referral_id: uuid.UUID
    site_id: str
    meeting_slug: str
    fellowship: str
    planned_date: dt.date
    support: str
    status: str
    business_status: str
    consent_to_reminders: bool
    # Discreet wording unless the client opted in to the meeting's full details.
    reminder_detail: Literal["discreet", "full"] = "discreet"
    # Mobile/email as Fernet ciphertext under the contact transit key (see shared.crypto);
    # None when the client gave no contact or no consent.
    contact_ciphertext: str | None = None


class ReferralStatusChanged(Payload):
    referral_id: uuid.UUID
    site_id: str
    meeting_slug: str
    fellowship: str
    from_status: str
    to_status: str
    from_business_status: str | None = None
    business_status: str | None = None
    accompanied: bool | None = None
    # The (new) planned first meeting date, when the transition set one.
    planned_date: dt.date | None = None
    # True when a keyworker made this move by confirming the client's own report of attendance.
    client_reported: bool | None = None

    @model_validator(mode="before")
    @classmethod
    def _drop_old_reason(cls, data: Any) -> Any:
        """Messages from before the free-text ``reason`` left this contract still parse (it is dropped, never read)."""
        if isinstance(data, dict) and "reason" in data:
            data = {key: value for key, value in data.items() if key != "reason"}
        return data


class ReferralConsentWithdrawn(Payload):
    referral_id: uuid.UUID
    site_id: str
    fellowship: str


class ReminderFact(Payload):
    """What happened to one reminder; shared by the reminder.* events."""

    reminder_id: uuid.UUID
    referral_id: uuid.UUID
    site_id: str
    fellowship: str
    kind: str  # one of REMINDER_KIND_LABELS
    channel: Literal["sms", "email"]
    due_at: dt.datetime | None = None
    reason: str | None = None


class ContactOptedOut(Payload):
    channel: Literal["sms", "email"]
    # Keyed hash of the number or address: the clear value never leaves notifications.
    contact_hash: str
    referrals: list[OptedOutReferral] = []


class OptedOutReferral(Payload):
    referral_id: uuid.UUID
    site_id: str
    fellowship: str


ContactOptedOut.model_rebuild()


class ReplyReceived(Payload):
    """A text from a client that is for the keyworker (not a keyword notifications answers itself)."""

    reply_id: uuid.UUID
    referral_id: uuid.UUID
    site_id: str
    fellowship: str
    channel: Literal["sms"] = "sms"
    received_at: dt.datetime
    # The client's own report of attendance when this is a YES or NO to the follow-up.
    attendance: Literal["attended", "not_attended"] | None = None
    # The text as Fernet ciphertext under the contact transit key; None once cleared.
    text_ciphertext: str | None = None


class AttendanceReported(Payload):
    """A client answered the follow-up: the directory counts it (no text, no number)."""

    referral_id: uuid.UUID
    site_id: str
    fellowship: str
    attendance: Literal["attended", "not_attended"]


class ContactOptedIn(Payload):
    """A client replied START: reminders for these referrals may go again."""

    channel: Literal["sms", "email"]
    contact_hash: str
    referrals: list[OptedOutReferral] = []


class EventSpec(BaseModel):
    payload: type[Payload]
    producer: str
    subscribers: tuple[str, ...]
    # Payload fields holding personal data (sealed), and the subscribers that may receive them:
    # every other subscriber gets them as None, and the outbox clears them once delivered.
    personal: tuple[str, ...] = ()
    personal_to: tuple[str, ...] = ()


_MEETING = {"producer": "directory", "subscribers": ("referrals", "notifications")}
_REFERRAL = {"producer": "referrals", "subscribers": ("notifications", "directory")}
_REMINDER = {"producer": "notifications"}

CATALOGUE: dict[str, EventSpec] = {
    "meeting.published": EventSpec(payload=MeetingSnapshot, **_MEETING),
    "meeting.updated": EventSpec(payload=MeetingSnapshot, **_MEETING),
    "meeting.withdrawn": EventSpec(payload=MeetingWithdrawn, **_MEETING),
    # The sealed contact goes to notifications (which sends the reminders), never to directory.
    "referral.created": EventSpec(payload=ReferralCreated, **_REFERRAL, personal=("contact_ciphertext",),
                                  personal_to=("notifications",)),
    "referral.status_changed": EventSpec(payload=ReferralStatusChanged, **_REFERRAL),
    "referral.consent_withdrawn": EventSpec(payload=ReferralConsentWithdrawn, **_REFERRAL),
    "reminder.scheduled": EventSpec(payload=ReminderFact, **_REMINDER, subscribers=("referrals",)),
    "reminder.cancelled": EventSpec(payload=ReminderFact, **_REMINDER, subscribers=("referrals",)),
    "reminder.sent": EventSpec(payload=ReminderFact, **_REMINDER, subscribers=("referrals", "directory")),
    "reminder.delivered": EventSpec(payload=ReminderFact, **_REMINDER, subscribers=("referrals", "directory")),
    "reminder.failed": EventSpec(payload=ReminderFact, **_REMINDER, subscribers=("referrals", "directory")),
    "contact.opted_out": EventSpec(payload=ContactOptedOut, **_REMINDER, subscribers=("referrals", "directory")),
    "contact.opted_in": EventSpec(payload=ContactOptedIn, **_REMINDER, subscribers=("referrals",)),
    # The reply's text is personal: sealed like the contact, and only referrals (the desk) receives it.
    "reply.received": EventSpec(payload=ReplyReceived, **_REMINDER, subscribers=("referrals",),
                                personal=("text_ciphertext",), personal_to=("referrals",)),
    "attendance.reported": EventSpec(payload=AttendanceReported, **_REMINDER, subscribers=("directory",)),
}
# Event types whose payload can carry personal data.
PERSONAL_TYPES = tuple(name for name, spec in CATALOGUE.items() if spec.personal)


def subscribers(event_type: str) -> tuple[str, ...]:
    return CATALOGUE[event_type].subscribers


def for_subscriber(body: dict, subscriber: str) -> dict:
    """The envelope ``body`` as ``subscriber`` may see it: personal fields it may not receive are None."""
    spec = CATALOGUE[body["type"]]
    if not spec.personal or subscriber in spec.personal_to:
        return body
    return without_personal(body)


def without_personal(body: dict) -> dict:
    """``body`` with every personal payload field cleared (None)."""
    spec = CATALOGUE[body["type"]]
    payload = {**body["payload"], **{name: None for name in spec.personal if name in body["payload"]}}
    return {**body, "payload": payload}


def has_personal(body: dict) -> bool:
    spec = CATALOGUE.get(body.get("type"))
    return spec is not None and any(body["payload"].get(name) is not None for name in spec.personal)


# --- signatures ---------------------------------------------------------------------------

def split_keys(keys: str) -> list[str]:
    """A comma-separated key list (newest first) as a list."""
    return [k.strip() for k in keys.split(",") if k.strip()]


def canonical(body: dict) -> bytes:
    """The bytes a signature covers: the envelope without its signature, as sorted compact JSON."""
    unsigned = {k: v for k, v in body.items() if k != "signature"}
    return json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _mac(body: dict, key: str) -> str:
    return hmac.new(key.encode(), canonical(body), hashlib.sha256).hexdigest()


def sign(body: dict, keys: str) -> dict:
    """``body`` signed with the first of ``keys`` (the producer's signing keys, newest first)."""
    return {**body, "signature": _mac(body, split_keys(keys)[0])}


def refusal(body: object, *, consumer: str, keys_of: dict[str, str]) -> str | None:
    """Why ``consumer`` must refuse this message, or None if it is authentic.

    ``keys_of`` maps each producer to its key list (any key may have signed: rotation)."""
    if not isinstance(body, dict) or not isinstance(body.get("type"), str) or not isinstance(body.get("payload"), dict):
        return "malformed"
    spec = CATALOGUE.get(body["type"])
    if spec is None:
        return "unknown_type"
    if consumer not in spec.subscribers:
        return "not_subscriber"
    if body.get("producer") != spec.producer:
        return "wrong_producer"
    signature = body.get("signature")
    keys = split_keys(keys_of.get(spec.producer) or "")
    if not isinstance(signature, str) or not any(hmac.compare_digest(signature, _mac(body, k)) for k in keys):
        return "bad_signature"
    return None


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Event(BaseModel):
    """The envelope every event travels in."""

    model_config = ConfigDict(frozen=True)

    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    type: str
    version: int = 1
    occurred_at: dt.datetime = Field(default_factory=utcnow)
    producer: str
    payload: dict[str, Any]
    # HMAC-SHA256 by the producer (see ``sign``); None only before the outbox signs it.
    signature: str | None = None

    @classmethod
    def new(cls, event_type: str, payload: Payload, *, producer: str, occurred_at: dt.datetime | None = None) -> Event:
        spec = CATALOGUE.get(event_type)
        if spec is None:
            raise ValueError(f"unknown event type {event_type!r}")
        if not isinstance(payload, spec.payload):
            raise TypeError(f"{event_type} carries {spec.payload.__name__}, not {type(payload).__name__}")
        return cls(
            type=event_type,
            producer=producer,
            payload=payload.model_dump(mode="json"),
            occurred_at=occurred_at or utcnow(),
        )

    def parsed(self) -> Any:
        """The payload as its catalogue model."""
        return CATALOGUE[self.type].payload.model_validate(self.payload)
