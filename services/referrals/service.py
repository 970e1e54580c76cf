"""Referral desk domain logic: plain functions the API, CLI, handlers and tests call.

Lifecycle
---------
A referral's state is its FAMA stage (the FHIR Task ``businessStatus``); each stage fixes
the FHIR Task ``status``. Allowed moves (``ALLOWED``; everything else is refused with 409):

=======================  ===========  =============================================================
from stage               status       may move to
=======================  ===========  =============================================================
information-given        requested    contact-arranged, first-meeting-planned, on-hold,
                                      did-not-engage, declined, entered-in-error
contact-arranged         accepted     first-meeting-planned, on-hold, did-not-engage, declined,
                                      entered-in-error
first-meeting-planned    in-progress  first-meeting-attended, on-hold, did-not-engage, declined,
                                      entered-in-error
first-meeting-attended   in-progress  followed-up, on-hold, did-not-engage, entered-in-error
on-hold                  on-hold      contact-arranged, first-meeting-planned, did-not-engage,
                                      declined, entered-in-error
followed-up              completed    entered-in-error
did-not-engage           failed       entered-in-error
declined                 cancelled    entered-in-error
entered-in-error         e-i-e        (nothing: final)
=======================  ===========  =============================================================

Why: the stages only move forward (information -> facilitated contact -> first meeting ->
follow-up); arranging contact may be skipped when the client goes alone. Once the client has
attended, "declined" no longer describes the outcome (follow-up or did-not-engage does). A
held referral resumes by arranging contact or planning a meeting again. Ended referrals are
final except for correcting a mistake (entered-in-error). A reason is required for on-hold,
did-not-engage (failed) and declined (cancelled); ``accompanied`` is required on attending.

Withdrawing consent (or the client replying STOP) stops reminders and erases the contact
details at once, but does not end the referral. A referral entered in error loses its contact
details at once; one that ended otherwise, after the retention period. Every erasure also
clears the sealed contact from the referral's outbox events in the same transaction.
"""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from zoneinfo import ZoneInfo

import structlog
from sqlalchemy import Integer, Select, and_, bindparam, case, func, or_, select, update
from sqlalchemy.orm import Session

from services.referrals import audit
from services.referrals.models import ClientReply, Referral, ReferralHistory, ReferralReminder, meeting_replica
from services.referrals.runtime import runtime
from services.referrals.schemas import (
    ConsentOut,
    ContactOut,
    HistoryOut,
    ReferralDetailOut,
    ReferralIn,
    ReferralOut,
    ReminderOut,
    TransitionIn,
)
from shared.auth import Principal, Role
from shared.crypto import FieldCipher
from shared.db import dialect_insert
from shared.errors import Conflict, InvalidInput
from shared.events import (
    ENDED_STATUSES,
    ContactDetails,
    ContactOptedIn,
    ContactOptedOut,
    Event,
    MeetingSnapshot,
    ReferralConsentWithdrawn,
    ReferralCreated,
    ReferralStatusChanged,
    ReminderFact,
    ReplyReceived,
    Stage,
    utcnow,
)
from shared.masking import mask_email, mask_mobile
from shared.meeting_time import (
    describe,
    describe_exception,
    exceptions_of,
    long_date,
    meeting_guide_weekday,
    next_meeting,
    occurrence_on,
)

log = structlog.get_logger(__name__)

# The consent wording read to the client, verbatim, by version. Never edit a published
# version: add a new one and make it current, so every recorded consent keeps its words.
CONSENT_WORDING: dict[str, str] = {
    "2025-01": (
        "I agree that my keyworker's service may send me reminders about the meeting I chose, "
        "by text message and/or email, to the contact details I have given. Reminders do not "
        "name the meeting's fellowship unless I ask for full details. I can stop them at any "
        "time by replying STOP or by telling my keyworker. My contact details are deleted when "
        "I withdraw this consent, or 30 days after my referral ends."
    ),
}
CURRENT_CONSENT_WORDING = "2025-01"

STAGE_STATUS: dict[Stage, str] = {
    Stage.information_given: "requested",
    Stage.contact_arranged: "accepted",
    Stage.first_meeting_planned: "in-progress",
    Stage.first_meeting_attended: "in-progress",
    Stage.followed_up: "completed",
    Stage.on_hold: "on-hold",
    Stage.did_not_engage: "failed",
    Stage.declined: "cancelled",
    Stage.entered_in_error: "entered-in-error",
}

_S = Stage
ALLOWED: dict[Stage, tuple[Stage, ...]] = {
    _S.information_given: (_S.contact_arranged, _S.first_meeting_planned, _S.on_hold, _S.did_not_engage, _S.declined,
                           _S.entered_in_error),
    _S.contact_arranged: (_S.first_meeting_planned, _S.on_hold, _S.did_not_engage, _S.declined, _S.entered_in_error),
    _S.first_meeting_planned: (_S.first_meeting_attended, _S.on_hold, _S.did_not_engage, _S.declined,
                               _S.entered_in_error),
    _S.first_meeting_attended: (_S.followed_up, _S.on_hold, _S.did_not_engage, _S.entered_in_error),
    _S.on_hold: (_S.contact_arranged, _S.first_meeting_planned, _S.did_not_engage, _S.declined, _S.entered_in_error),
    _S.followed_up: (_S.entered_in_error,),
    _S.did_not_engage: (_S.entered_in_error,),
    _S.declined: (_S.entered_in_error,),
    _S.entered_in_error: (),
}
REASON_REQUIRED = frozenset({Stage.on_hold, Stage.did_not_engage, Stage.declined})


class ReferralError(InvalidInput):
    """Input the referral desk refuses; ``field`` names what was wrong (422)."""

    error_type = "value_error"


class IllegalTransition(Conflict):
    """A move the lifecycle does not allow (409); ``allowed`` lists those it does."""

    def __init__(self, from_stage: Stage, to_stage: Stage):
        self.allowed = [s.value for s in ALLOWED[from_stage]]
        options = ", ".join(self.allowed) or "nothing (this is final)"
        super().__init__(f"a referral at {from_stage.value} ({STAGE_STATUS[from_stage]}) cannot move to "
                         f"{to_stage.value}; allowed: {options}")

    def body(self) -> dict:
        return {"detail": str(self), "allowed": self.allowed}


class ConsentNotGiven(Conflict):
    """Withdrawing a consent that was never recorded (409)."""


def check_transition(*, from_stage: Stage, to_stage: Stage, reason: str | None = None,
                     accompanied: bool | None = None, planned_date: dt.date | None = None) -> None:
    """Raise IllegalTransition or ReferralError unless this move is allowed with these inputs."""
    if to_stage not in ALLOWED[from_stage]:
        raise IllegalTransition(from_stage, to_stage)
    if to_stage in REASON_REQUIRED and not (reason and reason.strip()):
        raise ReferralError("reason", f"a reason is required to move to {to_stage.value}")
    if to_stage == Stage.first_meeting_attended and accompanied is None:
        raise ReferralError("accompanied", "say whether the client was accompanied to the first meeting")
    if to_stage != Stage.first_meeting_attended and accompanied is not None:
        raise ReferralError("accompanied", "accompanied applies only to first-meeting-attended")
    if to_stage != Stage.first_meeting_planned and planned_date is not None:
        raise ReferralError("planned_date", "a planned date can only be set when planning the first meeting")


# --- meetings (from the local replica) -------------------------------------------------

def available_meeting(session: Session, slug: str) -> MeetingSnapshot:
    row = session.execute(select(meeting_replica).where(meeting_replica.c.slug == slug)).first()
    if row is None:
        raise ReferralError("meeting_slug", f"no meeting {slug!r} is known to the referral desk")
    meeting = MeetingSnapshot.model_validate(row.snapshot)
    if not row.active or meeting.attendance_option == "inactive":
        raise ReferralError("meeting_slug", f"the meeting {slug!r} has been withdrawn or is inactive")
    return meeting


def plan_date(meeting: MeetingSnapshot, planned: dt.date | None, now: dt.datetime) -> dt.date:
    """The checked planned first meeting date: default its next occurrence; never past, right weekday."""
    tz = ZoneInfo(meeting.timezone)
    today = now.astimezone(tz).date()
    if planned is None:
        if meeting.day is None:
            raise ReferralError("planned_date", "this meeting has no weekly day; give the planned date")
        if meeting.time is None:
            return next(today + dt.timedelta(days=i) for i in range(7) if meeting_guide_weekday(today + dt.timedelta(days=i))
                        == meeting.day)
        occurrence = next_meeting(meeting, after=now)
        if occurrence is None:
            raise ReferralError("planned_date", "this meeting's schedule has no more dates")
        return occurrence.date
    if meeting.day is not None and meeting_guide_weekday(planned) != meeting.day:
        days = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
        raise ReferralError("planned_date", f"the meeting is on {days[meeting.day]}s; {planned.isoformat()} is a "
                            f"{days[meeting_guide_weekday(planned)]}")
    if planned < today:
        raise ReferralError("planned_date", f"{planned.isoformat()} is in the past")
    occurrence = occurrence_on(meeting, planned) if meeting.time else None
    if meeting.time and occurrence is None:
        raise ReferralError("planned_date", f"the meeting ({describe(meeting)}) does not meet on {long_date(planned)}")
    if occurrence is not None and occurrence.closed:
        raise ReferralError("planned_date", f"the meeting is closed on {long_date(planned)}"
                            + (f" ({occurrence.note})" if occurrence.note else "") + ": choose another date")
    started = occurrence.start <= now if occurrence is not None else planned < today
    if planned < today or started:
        raise ReferralError("planned_date", f"{planned.isoformat()} is in the past")
    return planned


# --- writes ----------------------------------------------------------------------------

# session.info: (the referral created last in the session, its first history entry), for its answer;
# held here because the session's identity map would let the flushed entry go.
CREATED = "referral_created"


def _history(session: Session, referral: Referral, *, by: str, action: str, from_status: str | None = None,
             from_stage: str | None = None, reason: str | None = None, accompanied: bool | None = None,
             at: dt.datetime | None = None) -> ReferralHistory:
    entry = ReferralHistory(referral_id=referral.id, at=at or utcnow(), by=by, action=action,
                            from_status=from_status, from_stage=from_stage, to_status=referral.status,
                            to_stage=referral.business_status, reason=reason, accompanied=accompanied)
    session.add(entry)
    audit.record_change(session, referral=referral, by=by, action=action, from_stage=from_stage, at=at)
    return entry


def transit_cipher() -> FieldCipher:
    return FieldCipher(runtime.settings.contact_transit_keys)


def create_referral(session: Session, *, referral_in: ReferralIn, site_id: str, by: str,
                    now: dt.datetime | None = None) -> Referral:
    """Record a new referral (requested / information-given) and publish referral.created."""
    now = now or utcnow()
    if referral_in.consent is not None and referral_in.consent.wording_version not in CONSENT_WORDING:
        raise ReferralError("consent.wording_version", f"unknown consent wording version "
                            f"{referral_in.consent.wording_version!r}; current is {CURRENT_CONSENT_WORDING}")
    meeting = available_meeting(session, referral_in.meeting_slug)
    planned = plan_date(meeting, referral_in.planned_date, now)
    consent = referral_in.consent is not None and referral_in.consent.to_reminders
    referral = Referral(
        id=uuid.uuid4(), site_id=site_id, meeting_slug=meeting.slug, fellowship=meeting.fellowship,
        planned_date=planned, support=referral_in.support, client_reference=referral_in.client_reference,
        status=STAGE_STATUS[Stage.information_given], business_status=Stage.information_given.value,
        created_by=by, created_at=now, updated_at=now,
        mobile=referral_in.mobile if consent else None, email=referral_in.email if consent else None,
        reminder_detail=referral_in.reminder_detail, consent_to_reminders=consent,
        consent_recorded_by=by if consent else None, consent_recorded_at=now if consent else None,
        consent_wording_version=referral_in.consent.wording_version if consent else None,
    )
    session.add(referral)
    session.flush()
    session.info[CREATED] = (referral.id, _history(session, referral, by=by, action="created", at=now))
    sealed = None
    if consent:
        sealed = ContactDetails(mobile=referral.mobile, email=referral.email).seal(transit_cipher())
    runtime.outbox.record(session, "referral.created", ReferralCreated(
        referral_id=referral.id, site_id=site_id, meeting_slug=referral.meeting_slug, fellowship=referral.fellowship,
        planned_date=planned, support=referral.support, status=referral.status,
        business_status=referral.business_status, consent_to_reminders=consent,
        reminder_detail=referral.reminder_detail, contact_ciphertext=sealed))
    log.info("referral.created", referral_id=str(referral.id), site_id=site_id, meeting_slug=meeting.slug,
             consent=consent)
    return referral


def lock_referral(session: Session, referral_id: uuid.UUID) -> Referral | None:
    return session.scalar(select(Referral).where(Referral.id == referral_id).with_for_update())


def transition_referral(session: Session, *, referral: Referral, transition_in: TransitionIn, by: str,
                        now: dt.datetime | None = None, client_reported: bool | None = None) -> Referral:
    """Move a (locked) referral to another stage, keep the history, publish referral.status_changed."""
    now = now or utcnow()
    from_stage = Stage(referral.business_status)
    from_status = referral.status
    to_stage = transition_in.to
    reason = transition_in.reason.strip() if transition_in.reason and transition_in.reason.strip() else None
    check_transition(from_stage=from_stage, to_stage=to_stage, reason=reason, accompanied=transition_in.accompanied,
                     planned_date=transition_in.planned_date)
    new_date = None
    if transition_in.planned_date is not None:
        new_date = plan_date(available_meeting(session, referral.meeting_slug), transition_in.planned_date, now)
        referral.planned_date = new_date
    referral.status = STAGE_STATUS[to_stage]
    referral.business_status = to_stage.value
    referral.updated_at = now
    if to_stage == Stage.first_meeting_attended:
        referral.accompanied = transition_in.accompanied
    if referral.status in ENDED_STATUSES and referral.ended_at is None:
        referral.ended_at = now
    _history(session, referral, by=by, action="transition", from_status=from_status, from_stage=from_stage.value,
             reason=reason, accompanied=transition_in.accompanied, at=now)
    if to_stage == Stage.entered_in_error and referral.contact_erased_at is None:
        # Recorded by mistake: the contact details go at once, not after the retention period.
        _erase_contact(session, referral, now)
        _history(session, referral, by=by, action="contact_erased", from_status=referral.status,
                 from_stage=referral.business_status, reason="entered in error", at=now)
    elif referral.status in ENDED_STATUSES:
        # Notifications erases its copy on this event: nothing may send the sealed contact again.
        runtime.outbox.erase_personal(session, referral_ids=[referral.id])
    # The free-text reason stays here: it may name people, and the broker gets no free text.
    runtime.outbox.record(session, "referral.status_changed", ReferralStatusChanged(
        referral_id=referral.id, site_id=referral.site_id, meeting_slug=referral.meeting_slug,
        fellowship=referral.fellowship, from_status=from_status, to_status=referral.status,
        from_business_status=from_stage.value, business_status=to_stage.value,
        accompanied=transition_in.accompanied if to_stage == Stage.first_meeting_attended else None,
        planned_date=new_date, client_reported=client_reported))
    log.info("referral.status_changed", referral_id=str(referral.id), from_stage=from_stage.value, to_stage=to_stage.value)
    return referral


def _erase_contact(session: Session, referral: Referral, now: dt.datetime) -> None:
    """Erase the referral's contact details here and the sealed copies in its outbox events."""
    referral.mobile = None
    referral.email = None
    referral.contact_erased_at = now
    runtime.outbox.erase_personal(session, referral_ids=[referral.id])
    erase_replies(session, referral_id=referral.id)


def withdraw_consent(session: Session, *, referral: Referral, by: str, publish: bool = True,
                     now: dt.datetime | None = None) -> bool:
    """Stop reminders for a (locked) referral and erase its contact details; the referral goes on.

    Returns False if consent had already been withdrawn (nothing changes, nothing is published).
    """
    now = now or utcnow()
    if not referral.consent_to_reminders:
        raise ConsentNotGiven("this referral has no consent to reminders to withdraw")
    if referral.consent_withdrawn_at is not None:
        return False
    referral.consent_withdrawn_at = now
    referral.consent_withdrawn_by = by
    referral.updated_at = now
    _erase_contact(session, referral, now)
    _history(session, referral, by=by, action="consent_withdrawn", from_status=referral.status,
             from_stage=referral.business_status, at=now)
    if publish:
        runtime.outbox.record(session, "referral.consent_withdrawn", ReferralConsentWithdrawn(
            referral_id=referral.id, site_id=referral.site_id, fellowship=referral.fellowship))
    log.info("referral.consent_withdrawn", referral_id=str(referral.id), by_opt_out=not publish)
    return True


def erase_ended_contacts(session: Session, *, retention_days: int, now: dt.datetime | None = None,
                         limit: int = 500) -> int:
    """Erase the contact details of referrals that ended more than ``retention_days`` ago."""
    now = now or utcnow()
    cutoff = now - dt.timedelta(days=retention_days)
    query = (select(Referral).where(Referral.ended_at.is_not(None), Referral.ended_at <= cutoff,
                                    Referral.contact_erased_at.is_(None),
                                    or_(Referral.mobile.is_not(None), Referral.email.is_not(None)))
             .order_by(Referral.ended_at).limit(limit))
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    referrals = session.scalars(query).all()
    for referral in referrals:
        _erase_contact(session, referral, now)
        _history(session, referral, by="system:retention", action="contact_erased", from_status=referral.status,
                 from_stage=referral.business_status, reason=f"ended more than {retention_days} days ago", at=now)
    return len(referrals)


def run_erasure() -> int:
    """The scheduler's job: erase in batches until nothing is due."""
    total = 0
    while True:
        with runtime.transaction() as session:
            n = erase_ended_contacts(session, retention_days=runtime.settings.retention_days)
        total += n
        if n < 500:
            if total:
                log.info("referral.contacts_erased", count=total)
            return total


# --- events from notifications ---------------------------------------------------------

def apply_opt_out(session: Session, *, event: Event) -> int:
    """contact.opted_out: withdraw consent on the listed referrals (no event: notifications told everyone)."""
    payload: ContactOptedOut = event.parsed()
    changed = 0
    for listed in payload.referrals:
        referral = lock_referral(session, listed.referral_id)
        if referral is None or not referral.consent_to_reminders:
            continue
        if withdraw_consent(session, referral=referral, by=f"client:opted-out-{payload.channel}", publish=False,
                            now=event.occurred_at):
            changed += 1
    return changed


# Later statuses win whatever order the events arrive in; among final ones the newest event wins.
REMINDER_RANK = {"scheduled": 0, "held": 0, "sent": 1, "delivered": 2, "failed": 2, "too-late": 2, "cancelled": 2}


@functools.cache
def _reminder_upsert(dialect: str):
    """The one statement a reminder fact is: the row is made, or its status moves on by rank (a
    later event of the same rank wins; a lower rank never undoes a higher one) and its due time by
    the later event; a stale event changes nothing, ``updated_at`` included. Built once per
    database kind, so each execution skips building it again."""
    stored = ReferralReminder.__table__.c
    stmt = dialect_insert(dialect, ReferralReminder)
    new = stmt.excluded
    newer = new.status_event_at >= stored.status_event_at
    stored_rank = case(REMINDER_RANK, value=stored.status, else_=0)
    rank = bindparam("rank", type_=Integer)
    wins = or_(stored_rank < rank, and_(stored_rank == rank, newer))
    due_moves = and_(new.due_at.is_not(None), or_(stored.due_at.is_(None), newer))
    return stmt.on_conflict_do_update(index_elements=["reminder_id"], set_={
        "due_at": case((due_moves, new.due_at), else_=stored.due_at),
        **{column: case((wins, new[column]), else_=stored[column]) for column in ("status", "reason", "status_event_at")},
        "updated_at": case((or_(wins, due_moves), new.updated_at), else_=stored.updated_at)})


def record_reminder_fact(session: Session, *, event: Event) -> None:
    """reminder.*: keep the referral's local view of its reminders (and reachability)."""
    fact: ReminderFact = event.parsed()
    status = event.type.removeprefix("reminder.")
    if (fact.reason or "").startswith(("held:", "too late:")):  # notifications' send-time clock check
        status = {"scheduled": "held", "failed": "too-late"}.get(status, status)
    at = event.occurred_at
    session.execute(_reminder_upsert(session.get_bind().dialect.name), {
        "reminder_id": fact.reminder_id, "referral_id": fact.referral_id, "kind": fact.kind, "channel": fact.channel,
        "due_at": fact.due_at, "status": status, "reason": fact.reason, "status_event_at": at, "updated_at": utcnow(),
        "rank": REMINDER_RANK[status]})
    if status in ("failed", "delivered"):
        _update_reachability(session, fact=fact, status=status, at=at)


def _update_reachability(session: Session, *, fact: ReminderFact, status: str, at: dt.datetime) -> None:
    referral = lock_referral(session, fact.referral_id)
    if referral is None:
        return
    if status == "delivered":
        if referral.contact_unreachable_at is not None and at > referral.contact_unreachable_at:
            referral.contact_unreachable_at = None
            referral.contact_unreachable_reason = None
        return
    last_delivered = session.scalar(select(func.max(ReferralReminder.status_event_at)).where(
        ReferralReminder.referral_id == referral.id, ReferralReminder.status == "delivered"))
    if last_delivered is not None and last_delivered > at:
        return  # a later reminder got through: the contact is reachable
    if referral.contact_unreachable_at is not None and referral.contact_unreachable_at >= at:
        return
    first = referral.contact_unreachable_at is None
    referral.contact_unreachable_at = at
    referral.contact_unreachable_reason = f"{fact.channel}: {fact.reason or 'reminder failed'}"[:200]
    if first:
        _history(session, referral, by="system:notifications", action="contact_unreachable",
                 from_status=referral.status, from_stage=referral.business_status,
                 reason=referral.contact_unreachable_reason, at=at)


# --- reads -----------------------------------------------------------------------------

def reveals_contact(principal: Principal, site_id: str) -> bool:
    """Contact details are shown in full only to staff of the owning site (not even admins)."""
    return principal.role in (Role.keyworker, Role.site_lead) and principal.site == site_id


def referral_out(referral: Referral, *, reveal: bool, detail: bool = False, session: Session | None = None,
                 created: bool = False):
    """The referral as answered; ``detail``: with its history and reminders, read with ``session``.
    ``created``: made in ``session`` and not yet committed, so its history is what the session holds
    and it has no reminders yet (notifications plans them from the event the commit sends): two
    queries fewer on a new referral's answer."""
    contact = ContactOut(
        mobile=None if referral.mobile is None else (referral.mobile if reveal else mask_mobile(referral.mobile)),
        email=None if referral.email is None else (referral.email if reveal else mask_email(referral.email)),
        masked=not reveal, unreachable=referral.contact_unreachable_at is not None,
        erased_at=referral.contact_erased_at)
    consent = ConsentOut(to_reminders=referral.consent_to_reminders, recorded_by=referral.consent_recorded_by,
                         recorded_at=referral.consent_recorded_at, wording_version=referral.consent_wording_version,
                         withdrawn_at=referral.consent_withdrawn_at, withdrawn_by=referral.consent_withdrawn_by)
    fields = {name: getattr(referral, name) for name in (
        "id", "site_id", "meeting_slug", "fellowship", "planned_date", "support", "client_reference", "status",
        "business_status", "accompanied", "reminder_detail", "created_by", "created_at", "updated_at", "ended_at")}
    allowed = [s.value for s in ALLOWED[Stage(referral.business_status)]]
    if not detail:
        return ReferralOut(**fields, contact=contact, consent=consent, allowed_transitions=allowed)
    if created:
        created_id, first = session.info[CREATED]
        if created_id != referral.id:
            raise ValueError("referral_out(created=True) of a referral not created last in this session")
        history = [first]
        reminders = []
    else:
        history = session.scalars(select(ReferralHistory).where(ReferralHistory.referral_id == referral.id)
                                  .order_by(ReferralHistory.at, ReferralHistory.id)).all()
        reminders = session.scalars(select(ReferralReminder).where(ReferralReminder.referral_id == referral.id)
                                    .order_by(ReferralReminder.due_at.nulls_last(), ReferralReminder.reminder_id)).all()
    return ReferralDetailOut(**fields, contact=contact, consent=consent, allowed_transitions=allowed,
                             history=[HistoryOut.model_validate(h) for h in history],
                             reminders=[ReminderOut.model_validate(r) for r in reminders])


def list_referrals(session: Session, *, site_id: str | None = None, status: str | None = None,
                   stage: Stage | None = None, meeting_slug: str | None = None,
                   planned_from: dt.date | None = None, planned_to: dt.date | None = None,
                   created_from: dt.date | None = None, created_to: dt.date | None = None,
                   limit: int = 50, offset: int = 0) -> tuple[list[Referral], int]:
    query: Select = select(Referral)
    if site_id is not None:
        query = query.where(Referral.site_id == site_id)
    if status is not None:
        query = query.where(Referral.status == status)
    if stage is not None:
        query = query.where(Referral.business_status == stage.value)
    if meeting_slug is not None:
        query = query.where(Referral.meeting_slug == meeting_slug)
    if planned_from is not None:
        query = query.where(Referral.planned_date >= planned_from)
    if planned_to is not None:
        query = query.where(Referral.planned_date <= planned_to)
    if created_from is not None:
        query = query.where(Referral.created_at >= dt.datetime.combine(created_from, dt.time(), dt.UTC))
    if created_to is not None:
        query = query.where(Referral.created_at < dt.datetime.combine(created_to + dt.timedelta(days=1), dt.time(), dt.UTC))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    items = session.scalars(query.order_by(Referral.created_at.desc(), Referral.id).limit(limit).offset(offset)).all()
    return list(items), total


# --- the client's replies (reply.received, contact.opted_in) ----------------------------------

REPORT_WAITING, REPORT_CONFIRMED, REPORT_DISMISSED = "waiting", "confirmed", "dismissed"
NOT_ATTENDED_REASON = "The client replied by text that they did not get to the meeting"
# Stages from which a confirmed YES first plans the meeting (the keyworker never had to), then marks it attended.
PLAN_FIRST = (Stage.information_given, Stage.contact_arranged, Stage.on_hold)


def erase_replies(session: Session, *, referral_id: uuid.UUID) -> None:
    """The client's words go with their contact details (the fact of a reply stays)."""
    session.execute(update(ClientReply).where(ClientReply.referral_id == referral_id, ClientReply.text.is_not(None))
                    .values(text=None).execution_options(synchronize_session="fetch"))


def record_reply(session: Session, *, event: Event) -> ClientReply | None:
    """reply.received: keep the words (encrypted) for the keyworker, unread; a YES/NO report waits to be confirmed."""
    reply: ReplyReceived = event.parsed()
    referral = lock_referral(session, reply.referral_id)
    if referral is None or session.get(ClientReply, reply.reply_id) is not None:
        return None
    text = None
    if reply.text_ciphertext and referral.contact_erased_at is None:  # an erased referral keeps no new words
        text = FieldCipher(runtime.settings.contact_transit_keys).decrypt(reply.text_ciphertext)
    row = ClientReply(id=reply.reply_id, referral_id=referral.id, received_at=reply.received_at, text=text,
                      attendance=reply.attendance, report_state=REPORT_WAITING if reply.attendance else None)
    session.add(row)
    session.flush()
    log.info("referral.reply_received", referral_id=str(referral.id), report=reply.attendance)
    return row


def apply_opt_in(session: Session, *, event: Event) -> int:
    """contact.opted_in: the client texted START; consent their STOP withdrew stands again."""
    payload: ContactOptedIn = event.parsed()
    changed = 0
    for listed in payload.referrals:
        referral = lock_referral(session, listed.referral_id)
        if (referral is None or referral.status in ENDED_STATUSES or referral.consent_withdrawn_at is None
                or not (referral.consent_withdrawn_by or "").startswith("client:opted-out")):
            continue
        referral.consent_withdrawn_at = referral.consent_withdrawn_by = None
        referral.contact_erased_at = None  # notifications holds the number the client texted START from
        _history(session, referral, by=f"client:opted-in-{payload.channel}", action="opted_in",
                 from_status=referral.status, from_stage=referral.business_status, at=event.occurred_at)
        changed += 1
    return changed


def mark_replies_seen(session: Session, *, referral: Referral, by: str, now: dt.datetime | None = None) -> int:
    """A keyworker of the site has the referral's page open: its replies are no longer unread."""
    return session.execute(update(ClientReply).where(ClientReply.referral_id == referral.id,
                                                     ClientReply.seen_at.is_(None))
                           .values(seen_at=now or utcnow(), seen_by=by)
                           .execution_options(synchronize_session=False)).rowcount


def replies_of(session: Session, referral_id: uuid.UUID) -> list[ClientReply]:
    return list(session.scalars(select(ClientReply).where(ClientReply.referral_id == referral_id)
                                .order_by(ClientReply.received_at.desc(), ClientReply.id)))


def waiting_report(session: Session, *, referral: Referral, reply_id: uuid.UUID) -> ClientReply:
    reply = session.scalar(select(ClientReply).where(ClientReply.id == reply_id, ClientReply.referral_id == referral.id)
                           .with_for_update())
    if reply is None or reply.attendance is None:
        raise ReferralError("reply", "that reply is not the client's report of attendance")
    if reply.report_state != REPORT_WAITING:
        raise ReferralError("reply", f"that report has already been {reply.report_state}")
    return reply


def confirm_report(session: Session, *, referral: Referral, reply_id: uuid.UUID, by: str,
                   accompanied: bool | None = None, now: dt.datetime | None = None) -> Referral:
    """One click: the client's YES moves the (locked) referral to first-meeting-attended (planning it
    first if nobody had), a NO to did-not-engage; the event says the client reported it."""
    now = now or utcnow()
    reply = waiting_report(session, referral=referral, reply_id=reply_id)
    if reply.attendance == "attended":
        if accompanied is None:
            raise ReferralError("accompanied", "say whether someone went with the client to the meeting")
        if Stage(referral.business_status) in PLAN_FIRST:
            transition_referral(session, referral=referral, transition_in=TransitionIn(to=Stage.first_meeting_planned),
                                by=by, now=now)
        transition_referral(session, referral=referral, client_reported=True, by=by, now=now,
                            transition_in=TransitionIn(to=Stage.first_meeting_attended, accompanied=accompanied))
    else:
        transition_referral(session, referral=referral, client_reported=True, by=by, now=now,
                            transition_in=TransitionIn(to=Stage.did_not_engage, reason=NOT_ATTENDED_REASON))
    reply.report_state, reply.seen_at, reply.seen_by = REPORT_CONFIRMED, reply.seen_at or now, reply.seen_by or by
    return referral


def dismiss_report(session: Session, *, referral: Referral, reply_id: uuid.UUID, by: str,
                   now: dt.datetime | None = None) -> None:
    """The keyworker knows better (the client meant another meeting...): the report no longer waits."""
    reply = waiting_report(session, referral=referral, reply_id=reply_id)
    reply.report_state, reply.seen_at, reply.seen_by = REPORT_DISMISSED, reply.seen_at or now or utcnow(), by


# --- meetings that change under open referrals ---------------------------------------------------

WEEKDAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")


def _when(meeting: MeetingSnapshot) -> str:
    day = WEEKDAYS[meeting.day] if meeting.day is not None else "by appointment"
    return f"{day} {meeting.time}" if meeting.time else day


def meeting_change(previous: MeetingSnapshot | None, current: MeetingSnapshot) -> str | None:
    """What a keyworker needs to know changed in a meeting, in plain words, or None (nothing that
    matters to a client on their way there: a new name or types are not news)."""
    if previous is None or previous == current:
        return None
    if previous.active and not current.active:
        return "The meeting was withdrawn"
    if not previous.active and current.active:
        return "The meeting is running again"
    changes = []
    if (previous.rrule, previous.dtstart) != (current.rrule, current.dtstart):
        changes.append(f"now {describe(current) or 'by appointment'}{' at ' + current.time if current.time else ''}")
    elif (previous.day, previous.time, previous.timezone) != (current.day, current.time, current.timezone):
        changes.append(f"moved from {_when(previous)} to {_when(current)}")
    elif previous.end_time != current.end_time:
        changes.append(f"now ends at {current.end_time or 'an unknown time'}")
    if (previous.location, previous.formatted_address, previous.postcode) != (
            current.location, current.formatted_address, current.postcode):
        changes.append("new venue or address")
    if previous.attendance_option != current.attendance_option:
        changes.append(f"now {current.attendance_option.replace('_', ' ')}")
    if (previous.conference_url, previous.conference_phone) != (current.conference_url, current.conference_phone):
        changes.append("new joining details")
    if not changes:
        return None
    text = "; ".join(changes)
    return (text[0].upper() + text[1:])[:200]


def note_meeting_change(session: Session, *, previous: MeetingSnapshot | None, current: MeetingSnapshot,
                        at: dt.datetime) -> int:
    """Flag every open referral to the meeting, for its keyworker (the referral page and the work
    queue), until one of the site's staff has seen it. Reminders follow the change in notifications."""
    change = meeting_change(previous, current)
    flagged = 0
    if change is not None:
        flagged = session.execute(
            update(Referral).where(Referral.meeting_slug == current.slug, Referral.status.not_in(ENDED_STATUSES))
            .values(meeting_changed_at=at, meeting_change=change, meeting_change_seen_at=None)
            .execution_options(synchronize_session=False)).rowcount
    if previous is None or not current.active:
        return flagged
    for date, text in dated_changes(previous, current).items():
        said = f"{change}; {text[0].lower()}{text[1:]}" if change else text
        flagged += session.execute(
            update(Referral).where(Referral.meeting_slug == current.slug, Referral.status.not_in(ENDED_STATUSES),
                                   Referral.planned_date == date)
            .values(meeting_changed_at=at, meeting_change=said[:200], meeting_change_seen_at=None)
            .execution_options(synchronize_session=False)).rowcount
    return flagged


def dated_changes(previous: MeetingSnapshot, current: MeetingSnapshot) -> dict[dt.date, str]:
    """The single occurrences closed, changed or back to usual between two snapshots, in plain words,
    for the referrals planned on those dates ("The planned session is closed: Closed Fri 25 December: Christmas")."""
    old, new = exceptions_of(previous), exceptions_of(current)
    out = {}
    for date, exception in new.items():
        if old.get(date) != exception:
            kind = "closed" if exception.get("closed") else "changed"
            out[date] = f"The planned session is {kind}: {describe_exception(exception)}"
    for date in old.keys() - new.keys():
        out[date] = f"The planned session on {long_date(date)} is on as usual again"
    return out


def mark_meeting_change_seen(session: Session, *, referral: Referral, now: dt.datetime | None = None) -> bool:
    if referral.meeting_changed_at is None or referral.meeting_change_seen_at is not None:
        return False
    referral.meeting_change_seen_at = now or utcnow()
    return True


# --- the keyworker's work queue ----------------------------------------------------------------

QUEUE_KINDS = ("reports", "replies", "meeting_changed", "no_outcome", "unreachable", "opted_out")
# Stages at which a meeting date that has passed still waits for its outcome.
AWAITING_OUTCOME = (Stage.information_given.value, Stage.contact_arranged.value, Stage.first_meeting_planned.value)


def work_queue(session: Session, *, site_id: str | None, created_by: str | None = None,
               client_reference: str | None = None, today: dt.date | None = None,
               limit: int = 200) -> dict[str, list[tuple[Referral, dt.datetime | dt.date]]]:
    """What needs a keyworker's attention, by kind, each list oldest first: (referral, since when).

    Only from data this service owns or receives by events: replies and reports (reply.received),
    meetings changed under the referral (meeting.*), failed delivery (reminder.failed), opt-outs
    (contact.opted_out), planned dates that passed."""
    today = today or utcnow().astimezone(ZoneInfo("Europe/London")).date()
    open_ = Referral.status.not_in(ENDED_STATUSES)

    def scoped(query):
        if site_id is not None:
            query = query.where(Referral.site_id == site_id)
        if created_by is not None:
            query = query.where(Referral.created_by == created_by)
        if client_reference:
            query = query.where(Referral.client_reference.startswith(client_reference.upper(), autoescape=True))
        return query

    def replies(*where):
        since = func.min(ClientReply.received_at).label("since")
        query = scoped(select(Referral, since).join(ClientReply, ClientReply.referral_id == Referral.id)
                       .where(*where).group_by(Referral.id))
        return [(r, at) for r, at in session.execute(query.order_by(since, Referral.id).limit(limit))]

    def referrals(since, *where):
        query = scoped(select(Referral).where(open_, *where)).order_by(since, Referral.id).limit(limit)
        return [(r, getattr(r, since.key)) for r in session.scalars(query)]

    return {
        "reports": replies(ClientReply.report_state == REPORT_WAITING),
        "replies": replies(ClientReply.seen_at.is_(None)),
        "meeting_changed": referrals(Referral.meeting_changed_at, Referral.meeting_changed_at.is_not(None),
                                     Referral.meeting_change_seen_at.is_(None)),
        "no_outcome": referrals(Referral.planned_date, Referral.planned_date < today,
                                Referral.business_status.in_(AWAITING_OUTCOME)),
        "unreachable": referrals(Referral.contact_unreachable_at, Referral.contact_unreachable_at.is_not(None)),
        "opted_out": referrals(Referral.consent_withdrawn_at, Referral.consent_withdrawn_at.is_not(None),
                               Referral.consent_withdrawn_by.startswith("client:opted-out")),
    }
