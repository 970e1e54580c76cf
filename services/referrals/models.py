from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import Boolean, Date, ForeignKey, Integer, String, Uuid
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.referrals.config import get_settings
from shared.crypto import EncryptedText, FieldCipher, cipher_for
from shared.db import UTCDateTime, make_metadata
from shared.events import utcnow
from shared.replica import meeting_replica_table


class Base(DeclarativeBase):
    metadata = make_metadata()


meeting_replica = meeting_replica_table(Base.metadata)


def at_rest_cipher() -> FieldCipher:
    """Personal data at rest: contact details and reply texts (REFERRALS_ENCRYPTION_KEYS)."""
    return cipher_for(get_settings().encryption_keys)


class Referral(Base):
    """A client referred by a keyworker to a mutual-aid meeting.

    Only a pseudonymous client reference is kept; a mobile and/or email only with consent
    to reminders, encrypted at rest and erased once the referral has ended long enough.
    """

    __tablename__ = "referrals"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    site_id: Mapped[str] = mapped_column(String(64), index=True)
    meeting_slug: Mapped[str] = mapped_column(String(200), index=True)
    fellowship: Mapped[str] = mapped_column(String(64))
    planned_date: Mapped[dt.date] = mapped_column(Date, index=True)
    support: Mapped[str] = mapped_column(String(32))
    client_reference: Mapped[str] = mapped_column(String(24))
    status: Mapped[str] = mapped_column(String(20), index=True)
    business_status: Mapped[str] = mapped_column(String(32), index=True)
    accompanied: Mapped[bool | None] = mapped_column(Boolean)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    ended_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), index=True)

    mobile: Mapped[str | None] = mapped_column(EncryptedText(at_rest_cipher))  # E.164
    email: Mapped[str | None] = mapped_column(EncryptedText(at_rest_cipher))
    reminder_detail: Mapped[str] = mapped_column(String(10), default="discreet")
    consent_to_reminders: Mapped[bool] = mapped_column(Boolean, default=False)
    consent_recorded_by: Mapped[str | None] = mapped_column(String(200))
    consent_recorded_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    consent_wording_version: Mapped[str | None] = mapped_column(String(20))
    consent_withdrawn_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    consent_withdrawn_by: Mapped[str | None] = mapped_column(String(200))
    contact_unreachable_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    contact_unreachable_reason: Mapped[str | None] = mapped_column(String(200))
    contact_erased_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    # The meeting changed (moved, new venue or joining details, withdrawn) while the referral was open:
    # what changed, when, and when a keyworker of the site saw it (None: still to see).
    meeting_changed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    meeting_change: Mapped[str | None] = mapped_column(String(200))
    meeting_change_seen_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class ReferralHistory(Base):
    """What happened to a referral, who did it and when: every transition, consent and erasure."""

    __tablename__ = "referral_history"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    referral_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("referrals.id", ondelete="CASCADE"), index=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    by: Mapped[str] = mapped_column(String(200))
    # created, transition, consent_withdrawn, contact_unreachable, contact_erased
    action: Mapped[str] = mapped_column(String(32))
    from_status: Mapped[str | None] = mapped_column(String(20))
    from_stage: Mapped[str | None] = mapped_column(String(32))
    to_status: Mapped[str] = mapped_column(String(20))
    to_stage: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(String(500))
    accompanied: Mapped[bool | None] = mapped_column(Boolean)


class ReferralReminder(Base):
    """The referral's reminders as notifications reported them (from reminder.* events)."""

    __tablename__ = "referral_reminders"

    reminder_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    referral_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    kind: Mapped[str] = mapped_column(String(32))
    channel: Mapped[str] = mapped_column(String(8))
    due_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    # scheduled, sent, delivered, failed, cancelled
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(200))
    # occurred_at of the event that set the status (to resolve events arriving out of order)
    status_event_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class AuditEntry(Base):
    """Who looked at a client's contact details or changed a referral, when, and what (never the data itself).

    No foreign key: the trail outlives a referral's contact details and is pruned on its own
    schedule (REFERRALS_AUDIT_RETENTION_DAYS).
    """

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(200), index=True)
    actor_role: Mapped[str | None] = mapped_column(String(20))
    site_id: Mapped[str] = mapped_column(String(64), index=True)
    referral_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    # contact_viewed, created, transition, consent_withdrawn, contact_unreachable, contact_erased
    action: Mapped[str] = mapped_column(String(32))
    # What, in FAMA's words: "requested → accepted", "mobile, email", never a value or a reason.
    detail: Mapped[str | None] = mapped_column(String(200))
    # api, desk or system
    via: Mapped[str] = mapped_column(String(16))


class ClientReply(Base):
    """A text the client sent back (from reply.received): for the keyworker, unread until seen.

    The words are encrypted at rest and erased with the contact details. A YES or NO to the
    follow-up is also the client's own report of attendance, waiting for a keyworker to confirm."""

    __tablename__ = "client_replies"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    referral_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("referrals.id", ondelete="CASCADE"), index=True)
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), index=True)
    # Up to 1,600 characters of any script: room for its ciphertext.
    text: Mapped[str | None] = mapped_column(EncryptedText(at_rest_cipher, length=12000))
    # attended / not_attended: the client's own report; None for any other reply.
    attendance: Mapped[str | None] = mapped_column(String(16))
    # waiting / confirmed / dismissed, for a report only.
    report_state: Mapped[str | None] = mapped_column(String(16), index=True)
    seen_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime(), index=True)
    seen_by: Mapped[str | None] = mapped_column(String(200))
