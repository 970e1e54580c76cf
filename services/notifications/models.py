"""Reminders, the referrals' contact details, opt-outs, what was sent, and the dev outbox."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import Boolean, Date, Index, Integer, String, Text, UniqueConstraint, Uuid
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.notifications.config import get_settings
from shared.crypto import EncryptedText, FieldCipher, cipher_for
from shared.db import UTCDateTime, make_metadata
from shared.events import utcnow
from shared.replica import meeting_replica_table


class Base(DeclarativeBase):
    metadata = make_metadata()


meeting_replica = meeting_replica_table(Base.metadata)


def at_rest_cipher() -> FieldCipher:
    """Personal data at rest: contact details and recipients (NOTIFICATIONS_ENCRYPTION_KEYS)."""
    return cipher_for(get_settings().encryption_keys)


# Reminder statuses. "queued": claimed by the dispatcher, a send task is on its way.
CREATED, QUEUED, SENDING, SENT, DELIVERED = "created", "queued", "sending", "sent", "delivered"
PERMANENT_FAILURE, TEMPORARY_FAILURE, TECHNICAL_FAILURE = "permanent-failure", "temporary-failure", "technical-failure"
CANCELLED = "cancelled"
# Not sent: by the time it could go, the meeting had started (or its last useful moment passed).
TOO_LATE = "too-late"
PENDING = (CREATED, QUEUED)
FAILURES = (PERMANENT_FAILURE, TEMPORARY_FAILURE, TECHNICAL_FAILURE)


class ReferralContact(Base):
    """What notifications knows of a referral: its meeting, wording choice and contact."""

    __tablename__ = "referral_contacts"

    referral_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    site_id: Mapped[str] = mapped_column(String(64))
    fellowship: Mapped[str] = mapped_column(String(64))
    meeting_slug: Mapped[str | None] = mapped_column(String(200), index=True)
    planned_date: Mapped[dt.date | None] = mapped_column(Date)
    detail: Mapped[str] = mapped_column(String(16), default="discreet")
    channel: Mapped[str | None] = mapped_column(String(8))
    # Mobile (E.164) or email, Fernet-encrypted at rest; erased when consent is withdrawn.
    contact: Mapped[str | None] = mapped_column(EncryptedText(at_rest_cipher))
    contact_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    # False once the referral ended, consent was withdrawn or the contact opted out.
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    stopped_reason: Mapped[str | None] = mapped_column(String(64))
    # True once reminders were planned (False while the meeting is not yet in the replica).
    planned: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class Reminder(Base):
    __tablename__ = "reminders"
    __table_args__ = (
        # One reminder of a kind per referral and meeting occurrence: replays change nothing.
        UniqueConstraint("referral_id", "kind", "meeting_start", name="uq_reminders_occurrence"),
        Index("ix_reminders_status_due", "status", "due_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    referral_id: Mapped[uuid.UUID] = mapped_column(Uuid, index=True)
    site_id: Mapped[str] = mapped_column(String(64))
    fellowship: Mapped[str] = mapped_column(String(64))
    meeting_slug: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(32))
    channel: Mapped[str] = mapped_column(String(8))
    contact_hash: Mapped[str] = mapped_column(String(64), index=True)
    # The meeting start this reminder is about (for a move notice: the new start).
    meeting_start: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    previous_start: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    # When that meeting ends (a follow-up waits for it); None on rows planned before it was kept.
    meeting_end: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    due_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    status: Mapped[str] = mapped_column(String(24), default=CREATED)
    reason: Mapped[str | None] = mapped_column(String(200))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Set when a send was interrupted: ask the provider before sending again.
    in_doubt: Mapped[bool] = mapped_column(Boolean, default=False)
    provider_ref: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)
    queued_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    sending_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    sent_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())
    completed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime())


class OptOut(Base):
    """A number or address that replied STOP, kept only as a keyed hash."""

    __tablename__ = "opt_outs"

    contact_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    channel: Mapped[str] = mapped_column(String(8))
    opted_out_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class DevMessage(Base):
    """What the dev provider 'sent': exactly what a client would receive."""

    __tablename__ = "dev_messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    reference: Mapped[str] = mapped_column(String(64), index=True)
    channel: Mapped[str] = mapped_column(String(8))
    recipient: Mapped[str] = mapped_column(EncryptedText(at_rest_cipher))
    subject: Mapped[str | None] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)


class InboundMessage(Base):
    """A text a client sent us, by GOV.UK Notify's id: a replayed callback changes nothing twice.

    Only what it did is kept here: its words go (sealed) to the referral desk, never stored in this service."""

    __tablename__ = "inbound_messages"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    outcome: Mapped[str] = mapped_column(String(40))
    received_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=utcnow)
