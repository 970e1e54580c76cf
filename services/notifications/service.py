"""Notifications domain logic: planning, moving and cancelling reminders, opt-outs, callbacks.

Plain functions the handlers, API, CLI, tasks and tests call. Every change that others
must hear of is recorded in the outbox in the same transaction.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import unicodedata
import uuid
from collections.abc import Iterable
from zoneinfo import ZoneInfo

import phonenumbers
import structlog
from sqlalchemy import func, inspect, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.notifications import kinds
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
    InboundMessage,
    OptOut,
    ReferralContact,
    Reminder,
    meeting_replica,
)
from services.notifications.runtime import runtime
from services.notifications.schemas import DeliveryCallbackIn, InboundSmsIn
from shared.crypto import FieldCipher, keyed_hash
from shared.db import aware
from shared.discretion import plain_words
from shared.errors import DomainError
from shared.events import (
    AttendanceReported,
    ContactDetails,
    ContactOptedIn,
    ContactOptedOut,
    MeetingSnapshot,
    OptedOutReferral,
    ReferralCreated,
    ReminderFact,
    ReplyReceived,
    utcnow,
)
from shared.meeting_time import exceptions_of, is_regular, local_start, next_meeting, occurrence_on, parse_hhmm
from shared.replica import get_meeting

log = structlog.get_logger(__name__)

PLANNED_KINDS = kinds.PLANNED  # in priority order for the daily cap
QUIET_MARGIN = dt.timedelta(minutes=30)


def settings() -> Settings:
    return runtime.settings


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
    """The UTC start of the meeting on the referral's planned date (None if it has no time); that
    occurrence's own time when it was changed."""
    if not meeting.time:
        return None
    occurrence = None if is_regular(meeting) else occurrence_on(meeting, planned_date)
    start = occurrence.start if occurrence else local_start(planned_date, meeting.time, meeting.timezone)
    return start.astimezone(dt.UTC)


def closed_on(meeting: MeetingSnapshot | None, planned_date: dt.date | None) -> bool:
    """True when the meeting's occurrence on that date is closed (a dated exception)."""
    if meeting is None or planned_date is None or not meeting.exceptions:
        return False
    occurrence = occurrence_on(meeting, planned_date)
    return occurrence is not None and occurrence.closed


def meeting_end(meeting: MeetingSnapshot, start: dt.datetime, cfg: Settings) -> dt.datetime:
    """When the occurrence starting at ``start`` ends (UTC): its end time, else ``meeting_minutes`` later."""
    local = start.astimezone(ZoneInfo(meeting.timezone))
    change = exceptions_of(meeting).get(local.date()) if meeting.exceptions else None
    end_time = (change or {}).get("end_time") or meeting.end_time
    if not end_time:
        return start + dt.timedelta(minutes=cfg.meeting_minutes)
    end = local_start(local.date(), end_time, meeting.timezone)
    if end <= local:  # ends after midnight
        end = local_start(local.date() + dt.timedelta(days=1), end_time, meeting.timezone)
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
    timing = kinds.KINDS[kind].timing
    if timing == kinds.ANSWER:
        return SEND, None, None  # an answer to the client's own text, at once
    latest = start - dt.timedelta(minutes=cfg.send_margin_minutes)
    if timing == kinds.CONFIRMATION:
        pass  # "who will text you and how to stop": useful whenever it arrives, but not in quiet hours
    elif timing == kinds.AFTER:
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
        if timing not in (kinds.AFTER, kinds.CONFIRMATION) and until > latest:
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

def _local_day(due: dt.datetime, tz: ZoneInfo) -> tuple[dt.datetime, dt.datetime]:
    """The UTC bounds of the meeting's local day ``due`` falls on: the daily cap's day."""
    day = due.astimezone(tz).date()
    return (dt.datetime.combine(day, dt.time(0), tz).astimezone(dt.UTC),
            dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), tz).astimezone(dt.UTC))


def _planned_over(session: Session, hash_: str, days: Iterable[tuple[dt.datetime, dt.datetime]]) -> list[dt.datetime]:
    """When the contact's planned reminders (of any referral, not cancelled) are due from the first of
    ``days`` to the last: one query for the daily cap of a whole plan, counted per day by the caller."""
    days = list(days)
    if not days:
        return []
    return [aware(due) for due in session.scalars(select(Reminder.due_at).where(
        Reminder.contact_hash == hash_, Reminder.status != CANCELLED, Reminder.kind.in_(PLANNED_KINDS),
        Reminder.due_at >= min(start for start, _end in days), Reminder.due_at < max(end for _start, end in days)))]


def _set_reminder(session: Session, contact: ReferralContact, existing: Reminder | None, *, kind: str,
                  start: dt.datetime, end: dt.datetime, due: dt.datetime,
                  previous_start: dt.datetime | None = None) -> Reminder | None:
    """Create the reminder, or revive ``existing`` (the same occurrence's) if it was cancelled
    before it went; None if it stands. Not flushed, and no event yet: the caller does both."""
    if existing is not None:
        if existing.status != CANCELLED or existing.sent_at is not None:
            return None
        existing.status, existing.due_at, existing.reason, existing.attempts = CREATED, due, None, 0
        existing.previous_start, existing.contact_hash, existing.channel = previous_start, contact.contact_hash, contact.channel
        existing.meeting_end = end
        return existing
    reminder = Reminder(id=uuid.uuid4(), referral_id=contact.referral_id, site_id=contact.site_id,
                        fellowship=contact.fellowship, meeting_slug=contact.meeting_slug, kind=kind,
                        channel=contact.channel, contact_hash=contact.contact_hash, meeting_start=start,
                        meeting_end=end, previous_start=previous_start, due_at=due, status=CREATED, attempts=0,
                        in_doubt=False)
    session.add(reminder)
    return reminder


def _put_reminder(session: Session, contact: ReferralContact, *, kind: str, start: dt.datetime, end: dt.datetime,
                  due: dt.datetime, previous_start: dt.datetime | None = None) -> Reminder | None:
    """Create the reminder, or revive a cancelled one for the same occurrence; None if it exists."""
    existing = session.scalar(select(Reminder).where(Reminder.referral_id == contact.referral_id,
                                                     Reminder.kind == kind, Reminder.meeting_start == start))
    reminder = _set_reminder(session, contact, existing, kind=kind, start=start, end=end, due=due,
                             previous_start=previous_start)
    if reminder is not None:
        session.flush()
        runtime.outbox.record(session, "reminder.scheduled", fact(reminder))
    return reminder


def _confirmation_wanted(reminders: Iterable[Reminder]) -> bool:
    """Once per referral: none planned yet, or only ones a meeting move cancelled before they went."""
    return all(r.status == CANCELLED and r.reason == "meeting moved" for r in reminders if r.kind == "confirmation")


def plan_reminders(session: Session, *, contact: ReferralContact, meeting: MeetingSnapshot,
                   now: dt.datetime | None = None) -> list[Reminder]:
    """Plan the referral's reminders for its planned meeting date (idempotent); the first time,
    also the confirmation that tells the client who will text them and how to stop.

    In a few round trips whatever the number of reminders: the referral's reminders read once,
    the contact's daily counts in one query, what is new written in one flush and one outbox insert."""
    now = now or utcnow()
    contact.planned = True
    if not contact.active or contact.contact_hash is None or not meeting.active or contact.planned_date is None:
        return []
    if closed_on(meeting, contact.planned_date):
        return []  # the keyworker sees it on the desk and plans another date
    start = meeting_start(meeting, contact.planned_date)
    if start is None:
        return []
    cfg = settings()
    tz = ZoneInfo(meeting.timezone)
    end = meeting_end(meeting, start, cfg)
    times = plan_times(meeting=meeting, planned_date=contact.planned_date, now=now, cfg=cfg)
    # Keyed as the unique constraint: one reminder of a kind per referral and meeting occurrence.
    # A contact not yet written (new in this transaction) has none: reminders are made only here.
    existing = {} if inspect(contact).pending else {
        (r.kind, aware(r.meeting_start)): r
        for r in session.scalars(select(Reminder).where(Reminder.referral_id == contact.referral_id))}
    days = {kind: _local_day(due, tz) for kind, due in times.items() if kind in PLANNED_KINDS}
    # The contact's planned reminders, and those this plan adds as it goes (in priority order).
    planned = _planned_over(session, contact.contact_hash, days.values())
    made = []
    if cfg.confirmation_at_referral and start > now and _confirmation_wanted(existing.values()):
        soon = now + dt.timedelta(minutes=cfg.confirmation_delay_minutes)
        made.append(_set_reminder(session, contact, existing.get(("confirmation", start)), kind="confirmation",
                                  start=start, end=end, due=notice_time(soon, meeting, cfg)))
    for kind in PLANNED_KINDS:
        due = times.get(kind)
        if due is None:
            continue
        day_start, day_end = days[kind]
        if sum(day_start <= other < day_end for other in planned) >= cfg.daily_cap:
            log.info("reminder.skipped_daily_cap", referral_id=str(contact.referral_id), kind=kind)
            continue
        reminder = _set_reminder(session, contact, existing.get((kind, start)), kind=kind, start=start, end=end,
                                 due=due)
        if reminder is not None:
            made.append(reminder)
            planned.append(due)
    made = [reminder for reminder in made if reminder is not None]
    if made:
        session.flush()
        runtime.outbox.record_many(session, "reminder.scheduled", [fact(reminder) for reminder in made])
    return made


def _opt_out_and_meeting(session: Session, hash_: str, slug: str) -> tuple[bool, MeetingSnapshot | None]:
    """Whether the contact opted out, and the referral's meeting: one round trip for both."""
    row = session.execute(select(
        select(OptOut.contact_hash).where(OptOut.contact_hash == hash_).exists().label("opted_out"),
        select(meeting_replica.c.snapshot).where(meeting_replica.c.slug == slug).scalar_subquery().label("snapshot"),
    )).one()
    meeting = None if row.opted_out or row.snapshot is None else MeetingSnapshot.model_validate(row.snapshot)
    return bool(row.opted_out), meeting


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
    # Read before the contact changes, so the contact is written once, as planned (no autoflush between).
    hash_ = contact_hash(value, channel) if value is not None else None
    opted_out, meeting = _opt_out_and_meeting(session, hash_, referral.meeting_slug) if hash_ else (False, None)
    if contact is None:
        contact = ReferralContact(referral_id=referral.referral_id, active=True, planned=False)
        session.add(contact)
    contact.site_id, contact.fellowship, contact.meeting_slug = referral.site_id, referral.fellowship, referral.meeting_slug
    contact.planned_date, contact.detail = referral.planned_date, referral.reminder_detail
    if value is None:
        contact.active, contact.stopped_reason, contact.planned = False, "no consent or contact", True
        session.flush()
        return contact
    contact.channel, contact.contact_hash = channel, hash_
    if opted_out:
        contact.active, contact.stopped_reason, contact.planned = False, "opted out", True
        session.flush()
        return contact
    contact.contact = value
    if meeting is not None:
        plan_reminders(session, contact=contact, meeting=meeting, now=now)
    session.flush()  # written here at the latest, as before: a concurrent creation fails in the handler
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
OPTED_OUT = "opted out"


def erase_contacts(session: Session, contacts: list[ReferralContact]) -> None:
    """Erase these referrals' number or address, and the dev provider's record of it; the keyed
    hash stays (it is how an opt-out is honoured without the number)."""
    for contact in contacts:
        contact.contact = None
    referral_ids = [c.referral_id for c in contacts]
    if not referral_ids:
        return
    # Replies on their way to the desk lose their sealed text with the contact.
    runtime.outbox.erase_personal(session, referral_ids=referral_ids)
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
    # An ending or a withdrawal outranks an opt-out: START must not bring such a referral back.
    contact.active = False
    contact.stopped_reason = reason if contact.stopped_reason in (None, OPTED_OUT) else contact.stopped_reason
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
        was_closed = closed_on(previous, contact.planned_date)
        if closed_on(current, contact.planned_date):
            if not was_closed:  # that one occurrence is closed: as for a withdrawn meeting, for this client
                _cancel_and_tell(session, contact, meeting=current, start=old_start, now=now, cfg=cfg,
                                 reason="meeting closed that day")
            continue
        if was_closed:  # open again on the planned date: its reminders as usual
            plan_reminders(session, contact=contact, meeting=current, now=now)
            continue
        new_date = _moved_date(previous, current, contact.planned_date)
        new_start = meeting_start(current, new_date)
        if new_start is not None and (new_start <= now or not _meets(current, new_date)):
            # Passed, or the new schedule does not meet that day: its next date from then.
            day_start = local_start(new_date, "00:00", current.timezone) - dt.timedelta(minutes=1)
            nxt = next_meeting(current, after=max(now, day_start))
            new_start = nxt.start.astimezone(dt.UTC) if nxt else None
            new_date = nxt.date if nxt else new_date
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


def _meets(meeting: MeetingSnapshot, date: dt.date) -> bool:
    """The meeting has an open occurrence that date (always, for a plain weekly meeting on its day)."""
    if is_regular(meeting):
        return True
    on = occurrence_on(meeting, date)
    return on is not None and not on.closed


def meeting_withdrawn(session: Session, *, meeting: MeetingSnapshot, now: dt.datetime | None = None) -> None:
    """meeting.withdrawn: cancel pending reminders and tell each client once."""
    now = now or utcnow()
    cfg = settings()
    for contact in _active_contacts(session, meeting.slug):
        start = meeting_start(meeting, contact.planned_date) if contact.planned_date is not None else None
        _cancel_and_tell(session, contact, meeting=meeting, start=start, now=now, cfg=cfg, reason="meeting withdrawn")


def _cancel_and_tell(session: Session, contact: ReferralContact, *, meeting: MeetingSnapshot, start: dt.datetime | None,
                     now: dt.datetime, cfg: Settings, reason: str) -> None:
    """Cancel the referral's pending reminders and tell the client (once) that the meeting at ``start``
    will not take place: the meeting was withdrawn, or closed on that date."""
    cancel_pending(session, _pending_of(session, referral_id=contact.referral_id), reason=reason)
    if start is None or start <= now or contact.contact_hash is None:
        return
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
        # An ending or a withdrawal stays the reason (START must not undo it).
        contact.stopped_reason = OPTED_OUT if contact.active or contact.stopped_reason is None \
            else contact.stopped_reason
        contact.active = False
    erase_contacts(session, contacts)  # only the hash is needed to honour the opt-out
    session.flush()
    cancelled = cancel_pending(session, _pending_of(session, contact_hash=hash_), reason="opted out")
    if new:
        referrals = [OptedOutReferral(referral_id=c.referral_id, site_id=c.site_id, fellowship=c.fellowship)
                     for c in contacts]
        runtime.outbox.record(session, "contact.opted_out",
                              ContactOptedOut(channel=channel, contact_hash=hash_, referrals=referrals))
    return new, cancelled


# --- what a client's text says (docs/TEXT-REPLIES.md) ------------------------------------------

STOP, START, HELP, YES, NO, REPLY = "stop", "start", "help", "yes", "no", "reply"
# Words a client may put around a keyword without changing it ("Stop please", "ok STOP thanks").
COURTESY = frozenset({"please", "pls", "plz", "thanks", "thank", "you", "thankyou", "thx", "ta", "cheers", "now",
                      "ok", "okay", "x", "xx", "xxx"})
KEYWORDS: dict[str, frozenset[str]] = {
    STOP: frozenset({
        "stop", "stopall", "stop all", "unsubscribe", "cancel", "end", "quit", "stop texting", "stop texting me",
        "stop messaging", "stop messaging me", "stop the texts", "stop these texts", "stop the messages",
        "stop these messages", "stop sending texts", "stop sending me texts", "stop sending messages",
        "stop sending me messages", "no more texts", "no more messages"}),
    START: frozenset({"start", "unstop", "start again"}),
    HELP: frozenset({"help", "info"}),
    YES: frozenset({"yes", "y", "yeah", "yep", "yup", "yea", "aye", "yes i did", "i did", "did", "yes i went",
                    "i went", "went", "yes i got there", "i got there", "got there", "yes i made it", "i made it",
                    "made it"}),
    NO: frozenset({"no", "n", "nope", "nah", "no i didnt", "i didnt", "didnt", "no i did not", "i did not",
                   "did not", "no i didnt go", "i didnt go", "didnt go", "not this time", "no not this time",
                   "i couldnt make it", "couldnt make it", "no i couldnt make it", "i couldnt go", "couldnt go"}),
}
# GOV.UK Notify passes on texts of up to 10 fragments; a longer body is not a text message.
REPLY_MAX_CHARS = 1600
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def classify(text: str) -> str:
    """STOP, START, HELP, YES or NO when the whole text is that keyword (any case, spacing,
    punctuation, look-alike letters, a short courtesy around it); otherwise REPLY. A sentence
    that merely contains a keyword ("stayed to the end") is a REPLY."""
    words = plain_words(text)
    while words and words[0] in COURTESY:
        words = words[1:]
    while words and words[-1] in COURTESY:
        words = words[:-1]
    phrase = " ".join(words)
    return next((keyword for keyword, phrases in KEYWORDS.items() if phrase in phrases), REPLY)


class NotAText(DomainError, ValueError):
    """A callback whose body or number is not a text message from a phone (422)."""


def reply_text(message: str) -> str:
    """The text as kept: control characters dropped; NotAText if nothing is left or it is not text."""
    try:
        message.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise NotAText("message is not valid Unicode text (it holds a lone surrogate)") from exc
    text = _CONTROL.sub("", unicodedata.normalize("NFC", message)).strip()
    if not "".join(c for c in text if unicodedata.category(c) not in ("Cf", "Zs")):
        raise NotAText("message is empty: there is nothing to pass on")
    if len(text) > REPLY_MAX_CHARS:
        raise NotAText(f"message is longer than {REPLY_MAX_CHARS} characters: not a text message")
    return text


def reply_contact(session: Session, hash_: str) -> ReferralContact | None:
    """The referral a text from this number is about: the newest whose number we still hold."""
    return session.scalar(select(ReferralContact).where(ReferralContact.contact_hash == hash_,
                                                        ReferralContact.contact.is_not(None))
                          .order_by(ReferralContact.active.desc(), ReferralContact.created_at.desc()).limit(1))


def _follow_up_sent(session: Session, referral_id: uuid.UUID) -> bool:
    return session.scalar(select(func.count()).select_from(Reminder).where(
        Reminder.referral_id == referral_id, Reminder.kind == "follow_up", Reminder.sent_at.is_not(None))) > 0


def put_answer(session: Session, contact: ReferralContact, *, kind: str, occasion: dt.datetime,
               now: dt.datetime) -> Reminder | None:
    """An answer to the client's text, due now; one per referral, kind and ``occasion`` (None if sent already)."""
    exists = session.scalar(select(Reminder.id).where(Reminder.referral_id == contact.referral_id,
                                                      Reminder.kind == kind, Reminder.meeting_start == occasion))
    if exists is not None:
        return None
    reminder = Reminder(id=uuid.uuid4(), referral_id=contact.referral_id, site_id=contact.site_id,
                        fellowship=contact.fellowship, meeting_slug=contact.meeting_slug, kind=kind, channel="sms",
                        contact_hash=contact.contact_hash, meeting_start=occasion, meeting_end=None, due_at=now,
                        status=CREATED, attempts=0, in_doubt=False)
    session.add(reminder)
    session.flush()
    runtime.outbox.record(session, "reminder.scheduled", fact(reminder))
    return reminder


def _today_starts(now: dt.datetime) -> dt.datetime:
    """The UK day's start: at most one acknowledgement per referral from here."""
    local = now.astimezone(ZoneInfo("Europe/London"))
    return dt.datetime.combine(local.date(), dt.time(0), local.tzinfo).astimezone(dt.UTC)


def keep_reply(session: Session, *, contact: ReferralContact, text: str, keyword: str, reply_id: uuid.UUID,
               now: dt.datetime) -> str:
    """Pass the text on to the desk, sealed; YES or NO after the follow-up is the client's report."""
    attendance = None
    if keyword in (YES, NO) and _follow_up_sent(session, contact.referral_id):
        attendance = "attended" if keyword == YES else "not_attended"
    sealed = FieldCipher(settings().contact_transit_keys).encrypt(text)
    runtime.outbox.record(session, "reply.received", ReplyReceived(
        reply_id=reply_id, referral_id=contact.referral_id, site_id=contact.site_id, fellowship=contact.fellowship,
        received_at=now, attendance=attendance, text_ciphertext=sealed))
    if attendance is not None:
        runtime.outbox.record(session, "attendance.reported", AttendanceReported(
            referral_id=contact.referral_id, site_id=contact.site_id, fellowship=contact.fellowship,
            attendance=attendance))
    put_answer(session, contact, kind="reply_ack", occasion=_today_starts(now), now=now)
    return "attendance reported" if attendance else "reply passed on"


def opt_in(session: Session, *, hash_: str, number: str, now: dt.datetime) -> str:
    """START: lift the opt-out for the referrals it stopped whose consent stands (not ended, not
    withdrawn at the desk), with the number the client has just texted from, and plan again."""
    if not is_opted_out(session, hash_):
        return "not opted out"
    contacts = list(session.scalars(select(ReferralContact).where(ReferralContact.contact_hash == hash_,
                                                                  ReferralContact.stopped_reason == OPTED_OUT)
                                    .order_by(ReferralContact.created_at)))
    if not contacts:
        return "not opted in: no consent"
    session.delete(session.get(OptOut, hash_))
    for contact in contacts:
        contact.contact, contact.channel, contact.active, contact.stopped_reason = number, "sms", True, None
    session.flush()
    for contact in contacts:
        meeting = get_meeting(session, meeting_replica, contact.meeting_slug) if contact.meeting_slug else None
        if meeting is not None:
            plan_reminders(session, contact=contact, meeting=meeting, now=now)
    put_answer(session, contacts[-1], kind="opted_in", occasion=now, now=now)
    runtime.outbox.record(session, "contact.opted_in", ContactOptedIn(
        channel="sms", contact_hash=hash_,
        referrals=[OptedOutReferral(referral_id=c.referral_id, site_id=c.site_id, fellowship=c.fellowship)
                   for c in contacts]))
    return "opted in"


def inbound_sms(session: Session, *, inbound: InboundSmsIn, now: dt.datetime | None = None) -> str:
    """A text from a client (docs/TEXT-REPLIES.md). Raises NotAText (422) for a body or number that is
    not one; a replayed id changes nothing. The text itself is never logged."""
    now = now or utcnow()
    text = reply_text(inbound.message)
    try:
        number = normalise_mobile(inbound.source_number)
    except phonenumbers.NumberParseException as exc:
        raise NotAText(f"source_number is not a phone number: {exc}") from exc
    session.add(InboundMessage(id=inbound.id, outcome="received", received_at=now))
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        return "already received"
    hash_ = contact_hash(number, "sms")
    keyword = classify(text)
    if keyword == STOP:
        new, cancelled = opt_out(session, hash_=hash_, channel="sms")
        outcome = "opted out" if new else "already opted out"
    elif keyword == START:
        outcome = opt_in(session, hash_=hash_, number=number, now=now)
    elif is_opted_out(session, hash_):
        outcome = "opted out: not passed on"
    elif (contact := reply_contact(session, hash_)) is None:
        outcome = "unknown sender"
    elif keyword == HELP:
        put_answer(session, contact, kind="help", occasion=now, now=now)
        outcome = "help sent"
    else:
        outcome = keep_reply(session, contact=contact, text=text, keyword=keyword,
                             reply_id=uuid.uuid5(uuid.NAMESPACE_URL, f"notify-inbound:{inbound.id}"), now=now)
    session.get(InboundMessage, inbound.id).outcome = outcome
    log.info("inbound_sms.handled", outcome=outcome)
    return outcome


# --- email unsubscribe ------------------------------------------------------------------------

def unsubscribe_token(hash_: str) -> str:
    """A link's token: the address's keyed hash and a MAC over it (no guessable id, nothing to forge)."""
    mac = hmac.new(settings().hash_key.encode(), f"unsubscribe:{hash_}".encode(), hashlib.sha256).hexdigest()[:32]
    return f"{hash_}.{mac}"


def unsubscribe_hash(token: str) -> str | None:
    """The keyed hash a token was made for, or None if no key of ours made it."""
    hash_, _, _mac = token.partition(".")
    if not hash_ or len(token) > 200 or not token.isascii():
        return None
    return hash_ if hmac.compare_digest(unsubscribe_token(hash_).encode(), token.encode()) else None


def unsubscribe_url(hash_: str) -> str:
    return f"{settings().notifications_public_url.rstrip('/')}/unsubscribe/{unsubscribe_token(hash_)}"


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

