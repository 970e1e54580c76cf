"""Notifications domain logic: planning, moving and cancelling reminders, opt-outs, callbacks.

Plain functions the handlers, API, CLI, tasks and tests call. Every change that others
must hear of is recorded in the outbox in the same transaction.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Iterable
from zoneinfo import ZoneInfo

import phonenumbers
import structlog
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from services.notifications.config import Settings
from services.notifications.models import (
    CANCELLED,
    CREATED,
    DELIVERED,
    PENDING,
    SENDING,
    SENT,
    TOO_LATE,
    DevMessage,
    OptOut,
    ReferralContact,
    Reminder,
    meeting_replica,
)
from services.notifications.runtime import runtime
from services.notifications.schemas import DeliveryCallbackIn, InboundSmsIn
from shared.crypto import FieldCipher, keyed_hash
from shared.events import (
    ContactDetails,
    ContactOptedOut,
    MeetingSnapshot,
    OptedOutReferral,
    ReferralCreated,
    ReminderFact,
    utcnow,
)
from shared.meeting_time import local_start, next_occurrence, parse_hhmm
from shared.replica import get_meeting

log = structlog.get_logger(__name__)

PLANNED_KINDS = ("hours_before", "day_before", "follow_up")  # in priority order for the daily cap
STOP_RE = re.compile(r"\b(stop|end|unsubscribe|cancel)\b", re.I)
QUIET_MARGIN = dt.timedelta(minutes=30)


def settings() -> Settings:
    return runtime.settings


def aware(value: dt.datetime | None) -> dt.datetime | None:
    """Datetimes are stored in UTC; SQLite hands them back naive."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


# --- contact details -------------------------------------------------------------------

def normalise_mobile(number: str) -> str:
    """E.164 form of a UK (or international) number, so 07700 900123 and +447700900123 match."""
    raw = number.strip()
    if raw.isdigit() and raw.startswith("44"):
        raw = f"+{raw}"  # GOV.UK Notify gives inbound numbers as 447700900123
    parsed = phonenumbers.parse(raw, "GB")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def contact_hash(value: str, channel: str) -> str:
    normal = normalise_mobile(value) if channel == "sms" else value.strip().lower()
    return keyed_hash(normal, settings().hash_key)


def is_opted_out(session: Session, hash_: str) -> bool:
    return session.get(OptOut, hash_) is not None


# --- when reminders are due --------------------------------------------------------------

def meeting_start(meeting: MeetingSnapshot, planned_date: dt.date) -> dt.datetime | None:
    """The UTC start of the meeting on the referral's planned date (None if it has no time)."""
    if not meeting.time:
        return None
    return local_start(planned_date, meeting.time, meeting.timezone).astimezone(dt.UTC)


def meeting_end(meeting: MeetingSnapshot, start: dt.datetime, cfg: Settings) -> dt.datetime:
    """When the occurrence starting at ``start`` ends (UTC): its end time, else ``meeting_minutes`` later."""
    if not meeting.end_time:
        return start + dt.timedelta(minutes=cfg.meeting_minutes)
    local = start.astimezone(ZoneInfo(meeting.timezone))
    end = local_start(local.date(), meeting.end_time, meeting.timezone)
    if end <= local:  # ends after midnight
        end = local_start(local.date() + dt.timedelta(days=1), meeting.end_time, meeting.timezone)
    return end.astimezone(dt.UTC)


def in_quiet_hours(local: dt.datetime, cfg: Settings) -> bool:
    start, end, t = parse_hhmm(cfg.quiet_start), parse_hhmm(cfg.quiet_end), local.time()
    if start > end:  # wraps midnight, e.g. 21:00-08:00
        return t >= start or t < end
    return start <= t < end


def _hhmm(t: dt.time) -> str:
    return f"{t.hour:02d}:{t.minute:02d}"


def before_quiet_hours(local: dt.datetime, cfg: Settings) -> dt.datetime:
    """The same evening's last slot before quiet hours (quiet start minus 30 minutes)."""
    start = parse_hhmm(cfg.quiet_start)
    day = local.date()
    if parse_hhmm(cfg.quiet_start) > parse_hhmm(cfg.quiet_end) and local.time() < start:
        day -= dt.timedelta(days=1)  # after midnight: the quiet hours began the evening before
    slot = (dt.datetime.combine(day, start) - QUIET_MARGIN).time()
    return local_start(day, _hhmm(slot), local.tzinfo.key)


def after_quiet_hours(local: dt.datetime, cfg: Settings) -> dt.datetime:
    end = parse_hhmm(cfg.quiet_end)
    day = local.date() if local.time() < end else local.date() + dt.timedelta(days=1)
    return local_start(day, cfg.quiet_end, local.tzinfo.key)


def plan_times(*, meeting: MeetingSnapshot, planned_date: dt.date, now: dt.datetime, cfg: Settings) -> dict[str, dt.datetime]:
    """When each reminder of a referral is due (UTC), after quiet hours; none in the past.

    Computed on the meeting's local wall clock (so 18:00 the evening before stays 18:00
    across a BST/GMT change); "hours before" is real elapsed time before the start.
    Reminders before the meeting that fall in quiet hours move earlier, the follow-up
    moves later (to the end of quiet hours).
    """
    start = meeting_start(meeting, planned_date)
    if start is None:
        return {}
    tz = ZoneInfo(meeting.timezone)
    local_start_ = start.astimezone(tz)
    wanted = {
        "day_before": local_start(planned_date - dt.timedelta(days=1), cfg.day_before_time, meeting.timezone),
        "hours_before": (start - dt.timedelta(hours=cfg.hours_before)).astimezone(tz),
        "follow_up": local_start(planned_date + dt.timedelta(days=cfg.follow_up_days), cfg.follow_up_time,
                                 meeting.timezone),
    }
    out: dict[str, dt.datetime] = {}
    moved_earlier = set()
    for kind, due in wanted.items():
        if in_quiet_hours(due, cfg):
            if kind == "follow_up":
                due = after_quiet_hours(due, cfg)
            else:
                due = before_quiet_hours(due, cfg)
                moved_earlier.add(kind)
        if due <= now or (kind != "follow_up" and due >= local_start_):
            continue
        out[kind] = due.astimezone(dt.UTC)
    # An early meeting's "hours before" moved back to the evening before repeats the day-before one.
    if "hours_before" in moved_earlier and "hours_before" in out and "day_before" in out:
        hb, db = out["hours_before"].astimezone(tz), out["day_before"].astimezone(tz)
        if hb.date() == db.date():
            del out["hours_before"]
    return out


SEND, HOLD = "send", "hold"  # send_verdict's answers, with TOO_LATE


def send_verdict(*, kind: str, start: dt.datetime, end: dt.datetime | None, timezone: str, now: dt.datetime,
                 cfg: Settings) -> tuple[str, dt.datetime | None, str | None]:
    """The clock checked again at send time: (SEND, None, None), (HOLD, until, reason) or (TOO_LATE, None, reason).

    The table in docs/REMINDER-TIMING.md, row by row. A reminder before its meeting goes no
    later than ``send_margin_minutes`` before the start; a follow-up not before the end. Quiet
    hours are the meeting's own wall clock; holding until they end is pointless for a reminder
    whose last useful moment comes first."""
    latest = start - dt.timedelta(minutes=cfg.send_margin_minutes)
    if kind == "follow_up":
        end = end or start + dt.timedelta(minutes=cfg.meeting_minutes)
        if now < end:
            return HOLD, end, "held: the meeting has not ended"
    elif now >= start:
        return TOO_LATE, None, "too late: the meeting had started"
    elif now > latest:
        return TOO_LATE, None, f"too late: less than {cfg.send_margin_minutes:g} minutes before the meeting"
    local = now.astimezone(ZoneInfo(timezone))
    if in_quiet_hours(local, cfg):
        until = after_quiet_hours(local, cfg).astimezone(dt.UTC)
        if kind != "follow_up" and until > latest:
            return TOO_LATE, None, "too late: quiet hours end too close to the meeting"
        return HOLD, until, "held: quiet hours"
    return SEND, None, None


def notice_time(now: dt.datetime, meeting: MeetingSnapshot, cfg: Settings) -> dt.datetime:
    """A change notice goes now, or when quiet hours end."""
    local = now.astimezone(ZoneInfo(meeting.timezone))
    return (after_quiet_hours(local, cfg) if in_quiet_hours(local, cfg) else local).astimezone(dt.UTC)


# --- events --------------------------------------------------------------------------

def fact(reminder: Reminder, reason: str | None = None) -> ReminderFact:
    return ReminderFact(reminder_id=reminder.id, referral_id=reminder.referral_id, site_id=reminder.site_id,
                        fellowship=reminder.fellowship, kind=reminder.kind, channel=reminder.channel,
                        due_at=aware(reminder.due_at), reason=reason if reason is not None else reminder.reason)


# --- planning ----------------------------------------------------------------------------

def _planned_that_day(session: Session, hash_: str, due: dt.datetime, tz: ZoneInfo) -> int:
    day = due.astimezone(tz).date()
    start = dt.datetime.combine(day, dt.time(0), tz).astimezone(dt.UTC)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), tz).astimezone(dt.UTC)
    return session.scalar(select(func.count()).select_from(Reminder).where(
        Reminder.contact_hash == hash_, Reminder.status != CANCELLED, Reminder.kind.in_(PLANNED_KINDS),
        Reminder.due_at >= start, Reminder.due_at < end)) or 0


def _put_reminder(session: Session, contact: ReferralContact, *, kind: str, start: dt.datetime, end: dt.datetime,
                  due: dt.datetime, previous_start: dt.datetime | None = None) -> Reminder | None:
    """Create the reminder, or revive a cancelled one for the same occurrence; None if it exists."""
    existing = session.scalar(select(Reminder).where(Reminder.referral_id == contact.referral_id,
                                                     Reminder.kind == kind, Reminder.meeting_start == start))
    if existing is not None:
        if existing.status != CANCELLED or existing.sent_at is not None:
            return None
        existing.status, existing.due_at, existing.reason, existing.attempts = CREATED, due, None, 0
        existing.previous_start, existing.contact_hash, existing.channel = previous_start, contact.contact_hash, contact.channel
        existing.meeting_end = end
        reminder = existing
    else:
        reminder = Reminder(id=uuid.uuid4(), referral_id=contact.referral_id, site_id=contact.site_id,
                            fellowship=contact.fellowship, meeting_slug=contact.meeting_slug, kind=kind,
                            channel=contact.channel, contact_hash=contact.contact_hash, meeting_start=start,
                            meeting_end=end, previous_start=previous_start, due_at=due, status=CREATED, attempts=0,
                            in_doubt=False)
        session.add(reminder)
    session.flush()
    runtime.outbox.record(session, "reminder.scheduled", fact(reminder))
    return reminder


def plan_reminders(session: Session, *, contact: ReferralContact, meeting: MeetingSnapshot,
                   now: dt.datetime | None = None) -> list[Reminder]:
    """Plan the referral's reminders for its planned meeting date (idempotent)."""
    now = now or utcnow()
    contact.planned = True
    if not contact.active or contact.contact_hash is None or not meeting.active or contact.planned_date is None:
        return []
    start = meeting_start(meeting, contact.planned_date)
    if start is None:
        return []
    cfg = settings()
    tz = ZoneInfo(meeting.timezone)
    times = plan_times(meeting=meeting, planned_date=contact.planned_date, now=now, cfg=cfg)
    made = []
    for kind in PLANNED_KINDS:
        due = times.get(kind)
        if due is None:
            continue
        if _planned_that_day(session, contact.contact_hash, due, tz) >= cfg.daily_cap:
            log.info("reminder.skipped_daily_cap", referral_id=str(contact.referral_id), kind=kind)
            continue
        reminder = _put_reminder(session, contact, kind=kind, start=start, end=meeting_end(meeting, start, cfg),
                                 due=due)
        if reminder is not None:
            made.append(reminder)
    return made


def record_referral(session: Session, *, referral: ReferralCreated, now: dt.datetime | None = None) -> ReferralContact | None:
    """referral.created: keep the contact (encrypted) and plan its reminders."""
    contact = session.get(ReferralContact, referral.referral_id)
    if contact is not None and (contact.planned or not contact.active):
        return contact  # the same referral seen before, or already ended / withdrawn
    details = None
    if referral.consent_to_reminders and referral.contact_ciphertext:
        details = ContactDetails.unseal(FieldCipher(settings().contact_transit_keys), referral.contact_ciphertext)
    channel = value = None
    if details is not None and details.mobile:
        channel, value = "sms", normalise_mobile(details.mobile)
    elif details is not None and details.email:
        channel, value = "email", details.email.strip()
    if contact is None:
        contact = ReferralContact(referral_id=referral.referral_id, active=True, planned=False)
        session.add(contact)
    contact.site_id, contact.fellowship, contact.meeting_slug = referral.site_id, referral.fellowship, referral.meeting_slug
    contact.planned_date, contact.detail = referral.planned_date, referral.reminder_detail
    if value is None:
        contact.active, contact.stopped_reason, contact.planned = False, "no consent or contact", True
        session.flush()
        return contact
    hash_ = contact_hash(value, channel)
    contact.channel, contact.contact_hash = channel, hash_
    if is_opted_out(session, hash_):
        contact.active, contact.stopped_reason, contact.planned = False, "opted out", True
        session.flush()
        return contact
    contact.contact = value
    session.flush()
    meeting = get_meeting(session, meeting_replica, referral.meeting_slug)
    if meeting is not None:
        plan_reminders(session, contact=contact, meeting=meeting, now=now)
    return contact


def cancel_pending(session: Session, reminders: Iterable[Reminder], *, reason: str) -> list[Reminder]:
    """Cancel reminders not yet handed to a send task's provider call (created or queued)."""
    cancelled = []
    for reminder in reminders:
        if reminder.status not in PENDING:
            continue
        # Conditional, so a send task that claimed the row meanwhile wins cleanly.
        done = session.execute(update(Reminder).where(Reminder.id == reminder.id, Reminder.status.in_(PENDING))
                               .values(status=CANCELLED, reason=reason, completed_at=utcnow())
                               .execution_options(synchronize_session=False)).rowcount
        if done:
            session.refresh(reminder)
            runtime.outbox.record(session, "reminder.cancelled", fact(reminder, reason))
            cancelled.append(reminder)
    return cancelled


def _pending_of(session: Session, **where) -> list[Reminder]:
    query = select(Reminder).where(Reminder.status.in_(PENDING))
    for column, value in where.items():
        query = query.where(getattr(Reminder, column) == value)
    return list(session.scalars(query.order_by(Reminder.due_at)))


ERASED_RECIPIENT = "(erased)"


def erase_contacts(session: Session, contacts: list[ReferralContact]) -> None:
    """Erase these referrals' number or address, and the dev provider's record of it; the keyed
    hash stays (it is how an opt-out is honoured without the number)."""
    for contact in contacts:
        contact.contact = None
    referral_ids = [c.referral_id for c in contacts]
    if not referral_ids:
        return
    references = [str(i) for i in session.scalars(select(Reminder.id).where(Reminder.referral_id.in_(referral_ids)))]
    if references:
        session.execute(update(DevMessage).where(DevMessage.reference.in_(references))
                        .values(recipient=ERASED_RECIPIENT).execution_options(synchronize_session=False))


def stop_referral(session: Session, *, referral_id: uuid.UUID, site_id: str, fellowship: str, reason: str,
                  erase_contact: bool) -> list[Reminder]:
    """Referral ended or consent withdrawn: cancel what is pending and plan nothing more."""
    contact = session.get(ReferralContact, referral_id)
    if contact is None:
        # Arrived before referral.created: remember it so a late creation plans nothing.
        contact = ReferralContact(referral_id=referral_id, site_id=site_id, fellowship=fellowship, active=False,
                                  planned=True, stopped_reason=reason)
        session.add(contact)
        session.flush()
        return []
    contact.active, contact.stopped_reason = False, contact.stopped_reason or reason
    if erase_contact:
        erase_contacts(session, [contact])
    session.flush()
    return cancel_pending(session, _pending_of(session, referral_id=referral_id), reason=reason)


# --- meeting changes ---------------------------------------------------------------------

def _moved_date(previous: MeetingSnapshot, current: MeetingSnapshot, planned_date: dt.date) -> dt.date:
    """The same week's meeting under the new schedule (the nearest day to the old one)."""
    if previous.day is None or current.day is None:
        return planned_date
    shift = (current.day - previous.day) % 7
    if shift > 3:
        shift -= 7
    return planned_date + dt.timedelta(days=shift)


def _active_contacts(session: Session, slug: str) -> list[ReferralContact]:
    return list(session.scalars(select(ReferralContact).where(ReferralContact.meeting_slug == slug,
                                                              ReferralContact.active.is_(True))))


def meeting_changed(session: Session, *, previous: MeetingSnapshot | None, current: MeetingSnapshot,
                    now: dt.datetime | None = None) -> None:
    """meeting.published / meeting.updated: plan waiting referrals, move pending reminders."""
    now = now or utcnow()
    if not current.active:
        meeting_withdrawn(session, meeting=previous or current, now=now)
        return
    cfg = settings()
    for contact in _active_contacts(session, current.slug):
        if not contact.planned:
            plan_reminders(session, contact=contact, meeting=current, now=now)
            continue
        if previous is None or contact.planned_date is None:
            continue
        old_start = meeting_start(previous, contact.planned_date)
        if old_start is None or old_start <= now:
            continue  # that meeting has happened: its follow-up stands
        new_date = _moved_date(previous, current, contact.planned_date)
        new_start = meeting_start(current, new_date)
        if new_start is not None and new_start <= now:
            nxt = next_occurrence(current.day, current.time, current.timezone, now) if current.day is not None else None
            new_start = nxt.astimezone(dt.UTC) if nxt else None
            new_date = nxt.date() if nxt else new_date
        if new_start == old_start:
            _keep_end(session, contact, meeting=current, start=old_start, cfg=cfg)
            continue
        cancel_pending(session, _pending_of(session, referral_id=contact.referral_id), reason="meeting moved")
        if new_start is None:
            continue
        contact.planned_date = new_date
        plan_reminders(session, contact=contact, meeting=current, now=now)
        due = notice_time(now, current, cfg)
        if due < new_start:
            _put_reminder(session, contact, kind="meeting_moved", start=new_start,
                          end=meeting_end(current, new_start, cfg), due=due, previous_start=old_start)


def _keep_end(session: Session, contact: ReferralContact, *, meeting: MeetingSnapshot, start: dt.datetime,
              cfg: Settings) -> None:
    """Same start, perhaps a new end time: pending reminders of that occurrence keep the right end."""
    session.execute(update(Reminder).where(Reminder.referral_id == contact.referral_id, Reminder.meeting_start == start,
                                           Reminder.status.in_(PENDING))
                    .values(meeting_end=meeting_end(meeting, start, cfg)).execution_options(synchronize_session=False))


def meeting_withdrawn(session: Session, *, meeting: MeetingSnapshot, now: dt.datetime | None = None) -> None:
    """meeting.withdrawn: cancel pending reminders and tell each client once."""
    now = now or utcnow()
    cfg = settings()
    for contact in _active_contacts(session, meeting.slug):
        cancel_pending(session, _pending_of(session, referral_id=contact.referral_id), reason="meeting withdrawn")
        if contact.planned_date is None:
            continue
        start = meeting_start(meeting, contact.planned_date)
        if start is None or start <= now or contact.contact_hash is None:
            continue
        due = notice_time(now, meeting, cfg)
        if due < start:
            _put_reminder(session, contact, kind="meeting_cancelled", start=start, end=meeting_end(meeting, start, cfg),
                          due=due)


# --- opt-outs and callbacks ------------------------------------------------------------------

def opt_out(session: Session, *, hash_: str, channel: str) -> tuple[bool, list[Reminder]]:
    """Opt a number or address out everywhere. Returns (newly opted out, cancelled reminders)."""
    new = not is_opted_out(session, hash_)
    if new:
        session.add(OptOut(contact_hash=hash_, channel=channel))
    contacts = list(session.scalars(select(ReferralContact).where(ReferralContact.contact_hash == hash_)))
    affected = []
    for contact in contacts:
        if contact.active:
            affected.append(contact)
        contact.active, contact.stopped_reason = False, "opted out"
    erase_contacts(session, contacts)  # only the hash is needed to honour the opt-out
    session.flush()
    cancelled = cancel_pending(session, _pending_of(session, contact_hash=hash_), reason="opted out")
    if new:
        referrals = [OptedOutReferral(referral_id=c.referral_id, site_id=c.site_id, fellowship=c.fellowship)
                     for c in contacts]
        runtime.outbox.record(session, "contact.opted_out",
                              ContactOptedOut(channel=channel, contact_hash=hash_, referrals=referrals))
    return new, cancelled


def inbound_sms(session: Session, *, inbound: InboundSmsIn) -> str:
    """A text from a client: STOP, END, UNSUBSCRIBE or CANCEL anywhere in it opts the number out."""
    if not STOP_RE.search(inbound.message):
        return "ignored"
    try:
        hash_ = contact_hash(inbound.source_number, "sms")
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"source_number is not a phone number: {exc}") from exc
    new, cancelled = opt_out(session, hash_=hash_, channel="sms")
    log.info("contact.opted_out", new=new, cancelled=len(cancelled))
    return "opted out" if new else "already opted out"


NOTIFY_FINAL = {"delivered": DELIVERED, "permanent-failure": "permanent-failure",
                "temporary-failure": "temporary-failure", "technical-failure": "technical-failure"}


def delivery_status(session: Session, *, receipt: DeliveryCallbackIn) -> str:
    """A delivery receipt: sent -> delivered or failed, once; a final status is never overwritten."""
    new_status = NOTIFY_FINAL.get(receipt.status)
    if new_status is None:
        return "ignored"  # created / sending / pending: nothing final yet
    reminder = None
    if receipt.reference:
        try:
            reminder = session.get(Reminder, uuid.UUID(receipt.reference))
        except ValueError:
            reminder = None
    if reminder is None:
        reminder = session.scalar(select(Reminder).where(Reminder.provider_ref == receipt.id))
    if reminder is None:
        return "unknown"
    done = session.execute(update(Reminder).where(Reminder.id == reminder.id, Reminder.status.in_((SENDING, SENT)))
                           .values(status=new_status, completed_at=aware(receipt.completed_at) or utcnow(),
                                   provider_ref=func.coalesce(Reminder.provider_ref, receipt.id),
                                   reason=None if new_status == DELIVERED else f"provider: {receipt.status}")
                           .execution_options(synchronize_session=False)).rowcount
    if not done:
        return "unchanged"
    session.refresh(reminder)
    event = "reminder.delivered" if new_status == DELIVERED else "reminder.failed"
    runtime.outbox.record(session, event, fact(reminder))
    return new_status

