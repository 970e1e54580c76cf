"""Getting due reminders out: the dispatcher, the guarded send, the sweeper, the rate limit.

A reminder moves created -> queued (dispatcher) -> sending (a send task claimed it) ->
sent -> delivered / *-failure, or cancelled. Every move is a conditional UPDATE on the
current status, so a duplicated or redelivered task, or two workers at once, send once.
A send interrupted by a crash leaves the row in "sending"; whoever picks it up after
``sending_stale_seconds`` first asks the provider whether the message was taken.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

import redis
import structlog
from sqlalchemy import and_, case, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from services.notifications.models import (
    CANCELLED,
    CREATED,
    PERMANENT_FAILURE,
    QUEUED,
    SENDING,
    SENT,
    TECHNICAL_FAILURE,
    ContactSend,
    OptOut,
    ReferralContact,
    Reminder,
    meeting_replica,
)
from services.notifications.providers import UNKNOWN, PermanentFailure, TemporaryFailure, provider_for
from services.notifications.runtime import runtime
from services.notifications.service import aware, fact
from services.notifications.wording import Message, render
from shared import queues
from shared.db import is_sqlite, make_sessionmaker, transaction
from shared.events import MeetingSnapshot, utcnow
from shared.replica import get_meeting

log = structlog.get_logger(__name__)

SEND_TASK = "notifications.send_reminder"


class RetryLater(Exception):  # noqa: N818 (a signal, not an error)
    def __init__(self, countdown: float, reason: str):
        super().__init__(reason)
        self.countdown = countdown


# --- the shared rate limit ----------------------------------------------------------------

# GCRA: one key holds the "theoretical arrival time" of the next message; every worker
# shares it through Redis, and Redis's own clock is used so worker clocks do not matter.
_GCRA = """
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat - tolerance - now
if wait > 0 then return wait end
local next_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%d', next_tat), 'PX', math.ceil((next_tat - now) / 1000) + 1000)
return 0
"""


class RateLimit:
    def __init__(self, client: redis.Redis, key: str, per_minute: int, burst: int):
        self.client, self.key, self.per_minute = client, key, per_minute
        self.interval_us = 60_000_000 / per_minute if per_minute > 0 else 0
        self.tolerance_us = self.interval_us * max(burst - 1, 0)
        self.script = client.register_script(_GCRA)

    def acquire(self) -> float:
        """Wait for a slot; returns the seconds waited."""
        if self.per_minute <= 0:
            return 0.0
        waited = 0.0
        while True:
            wait_us = int(self.script(keys=[self.key], args=[int(self.interval_us), int(self.tolerance_us)]))
            if wait_us <= 0:
                return waited
            pause = min(wait_us / 1_000_000, 1.0)
            time.sleep(pause)
            waited += pause


@cache
def send_sessions() -> sessionmaker[Session]:
    """Sessions for the send path. Their events (reminder.sent...) leave with the outbox
    sweep in batches rather than one relay per send, which keeps a send at three commits."""
    return make_sessionmaker(runtime.engine)


@contextmanager
def send_transaction() -> Iterator[Session]:
    with transaction(send_sessions()) as session:
        yield session


_meetings: dict[str, tuple[float, MeetingSnapshot | None]] = {}
MEETING_CACHE_SECONDS = 5.0


def cached_meeting(session: Session, slug: str) -> MeetingSnapshot | None:
    """The replica's meeting, kept a few seconds per process (a change re-plans reminders anyway)."""
    hit = _meetings.get(slug)
    if hit is not None and time.monotonic() - hit[0] < MEETING_CACHE_SECONDS:
        return hit[1]
    meeting = get_meeting(session, meeting_replica, slug)
    _meetings[slug] = (time.monotonic(), meeting)
    return meeting


@cache
def _redis() -> redis.Redis:
    return redis.Redis.from_url(runtime.settings.redis_url, socket_timeout=5, socket_connect_timeout=5)


def rate_limit() -> RateLimit:
    cfg = runtime.settings
    return RateLimit(_redis(), f"{cfg.redis_key_prefix}notifications:send-rate", cfg.rate_limit_per_minute, cfg.rate_burst)


# --- dispatcher ---------------------------------------------------------------------------

def publish_sends(ids: list[uuid.UUID]) -> None:
    celery = runtime.celery
    with celery.producer_or_acquire() as producer:
        for reminder_id in ids:
            celery.send_task(SEND_TASK, args=[str(reminder_id)], queue=queues.NOTIFICATIONS_SEND, producer=producer)


def dispatch_due(*, now: dt.datetime | None = None, batch: int | None = None) -> int:
    """Claim due reminders (created -> queued) and enqueue one immediate send task each."""
    batch = batch or runtime.settings.dispatch_batch
    total = 0
    while True:
        at = now or utcnow()
        with runtime.sessions() as session:
            query = (select(Reminder.id).where(Reminder.status == CREATED, Reminder.due_at <= at)
                     .order_by(Reminder.due_at).limit(batch))
            if not is_sqlite(session.get_bind()):
                query = query.with_for_update(skip_locked=True)  # SQLite: BEGIN IMMEDIATE serialises
            ids = list(session.scalars(query))
            if ids:
                session.execute(update(Reminder).where(Reminder.id.in_(ids), Reminder.status == CREATED)
                                .values(status=QUEUED, queued_at=at))
            session.commit()
        if not ids:
            return total
        try:
            publish_sends(ids)
        except Exception:
            # Broker down: give the rows back (tasks already sent find them "created" and stop).
            with runtime.transaction() as session:
                session.execute(update(Reminder).where(Reminder.id.in_(ids), Reminder.status == QUEUED)
                                .values(status=CREATED, queued_at=None))
            raise
        total += len(ids)
        if len(ids) < batch:
            return total


def requeue_stuck(*, now: dt.datetime | None = None, limit: int = 1000) -> int:
    """Send tasks again for rows stuck in "queued" or "sending" (a lost task, a dead worker)."""
    now = now or utcnow()
    cfg = runtime.settings
    with runtime.transaction() as session:
        stuck_sending = list(session.scalars(select(Reminder.id).where(
            Reminder.status == SENDING,
            Reminder.sending_at < now - dt.timedelta(seconds=cfg.sending_stale_seconds)).limit(limit)))
        stuck_queued = list(session.scalars(select(Reminder.id).where(
            Reminder.status == QUEUED,
            Reminder.queued_at < now - dt.timedelta(seconds=cfg.queued_stale_seconds)).limit(limit)))
        if stuck_queued:
            session.execute(update(Reminder).where(Reminder.id.in_(stuck_queued), Reminder.status == QUEUED)
                            .values(queued_at=now))
    ids = stuck_sending + stuck_queued
    if ids:
        log.warning("reminders.requeued", sending=len(stuck_sending), queued=len(stuck_queued))
        publish_sends(ids)
    return len(ids)


# --- the guarded send ----------------------------------------------------------------------

def _finish(session: Session, reminder: Reminder, *, status: str, reason: str, event: str) -> None:
    session.execute(update(Reminder).where(Reminder.id == reminder.id)
                    .values(status=status, reason=reason[:200], completed_at=utcnow(), in_doubt=False))
    session.refresh(reminder)
    runtime.outbox.record(session, event, fact(reminder, reason[:200]))


def _claim(session: Session, reminder_id: uuid.UUID, now: dt.datetime) -> Reminder | None:
    """queued -> sending (or take over a "sending" row abandoned by a dead worker)."""
    stale_before = now - dt.timedelta(seconds=runtime.settings.sending_stale_seconds)
    return session.scalars(
        update(Reminder)
        .where(Reminder.id == reminder_id,
               or_(Reminder.status == QUEUED, and_(Reminder.status == SENDING, Reminder.sending_at < stale_before)))
        .values(status=SENDING, sending_at=now, attempts=Reminder.attempts + 1,
                in_doubt=case((Reminder.status == SENDING, True), else_=Reminder.in_doubt))
        .returning(Reminder)
        .execution_options(synchronize_session=False, populate_existing=True)).first()


def _contact_state(session: Session, reminder: Reminder, now: dt.datetime):
    """The contact, whether the number opted out, and its sends in the last hour: one query."""
    window = now - dt.timedelta(hours=1)
    sends = select(func.count()).where(ContactSend.contact_hash == reminder.contact_hash,
                                       ContactSend.sent_at > window).scalar_subquery()
    oldest = select(func.min(ContactSend.sent_at)).where(ContactSend.contact_hash == reminder.contact_hash,
                                                         ContactSend.sent_at > window).scalar_subquery()
    opted_out = select(OptOut.contact_hash).where(OptOut.contact_hash == reminder.contact_hash).exists()
    return session.execute(select(ReferralContact.contact, ReferralContact.active, ReferralContact.detail,
                                  opted_out, sends, oldest)
                           .where(ReferralContact.referral_id == reminder.referral_id)).first()


def _prepare(reminder_id: uuid.UUID, now: dt.datetime) -> tuple[Reminder, str, Message] | str:
    """Claim the row and build its message, or say why there is nothing to send."""
    with send_transaction() as session:
        reminder = _claim(session, reminder_id, now)
        if reminder is None:
            status = session.scalar(select(Reminder.status).where(Reminder.id == reminder_id))
            return f"skipped: {status or 'unknown'}"  # a duplicate or late task: nothing to do
        state = _contact_state(session, reminder, now)
        if state is not None and state[3]:
            _finish(session, reminder, status=CANCELLED, reason="opted out", event="reminder.cancelled")
            return "cancelled: opted out"
        if state is None or state.contact is None or (not state.active and reminder.kind != "meeting_cancelled"):
            _finish(session, reminder, status=CANCELLED, reason="no longer wanted", event="reminder.cancelled")
            return "cancelled: no longer wanted"
        sends, oldest = state[4], state[5]
        if not reminder.in_doubt and sends >= runtime.settings.hourly_cap:
            allowed_at = aware(oldest) + dt.timedelta(hours=1, seconds=1)
            if reminder.kind in ("day_before", "hours_before") and allowed_at >= aware(reminder.meeting_start):
                _finish(session, reminder, status=CANCELLED, reason="hourly cap", event="reminder.cancelled")
                return "cancelled: hourly cap"
            reminder.status, reminder.due_at, reminder.reason, reminder.queued_at = CREATED, allowed_at, "hourly cap", None
            reminder.attempts -= 1
            return "deferred: hourly cap"
        meeting = cached_meeting(session, reminder.meeting_slug)
        if meeting is None:
            _finish(session, reminder, status=PERMANENT_FAILURE, reason="meeting unknown", event="reminder.failed")
            return "failed: meeting unknown"
        message = render(kind=reminder.kind, channel=reminder.channel, meeting=meeting,
                         start=aware(reminder.meeting_start), previous_start=aware(reminder.previous_start),
                         detail=state.detail, now=now, templates_dir=runtime.settings.templates_dir)
        session.flush()
        session.expunge(reminder)
        return reminder, state.contact, message


def _mark_sent(reminder: Reminder, provider_ref: str) -> None:
    at = utcnow()
    with send_transaction() as session:
        done = session.execute(update(Reminder).where(Reminder.id == reminder.id, Reminder.status == SENDING)
                               .values(status=SENT, provider_ref=provider_ref, sent_at=at, in_doubt=False, reason=None)
                               .execution_options(synchronize_session=False)).rowcount
        session.add(ContactSend(contact_hash=reminder.contact_hash, reminder_id=reminder.id, sent_at=at))
        if done:
            runtime.outbox.record(session, "reminder.sent", fact(reminder, None))


def _fail(reminder_id: uuid.UUID, *, status: str, reason: str) -> None:
    with send_transaction() as session:
        reminder = session.get(Reminder, reminder_id)
        if reminder is not None and reminder.status == SENDING:
            _finish(session, reminder, status=status, reason=reason, event="reminder.failed")


def send_reminder(*, reminder_id: uuid.UUID) -> str:
    """Send one due reminder at most once. Raises RetryLater after a temporary failure."""
    cfg = runtime.settings
    prepared = _prepare(reminder_id, utcnow())
    if isinstance(prepared, str):
        return prepared
    reminder, to, message = prepared
    rate_limit().acquire()  # shared by every send worker
    provider = provider_for(reminder.channel, cfg, send_sessions())
    if reminder.in_doubt:
        found = provider.lookup(str(reminder.id))
        if found is UNKNOWN:
            _fail(reminder.id, status=TECHNICAL_FAILURE, reason="interrupted send with an unknown outcome")
            return "failed: outcome unknown"
        if found:
            _mark_sent(reminder, found)
            return "sent (found at the provider)"
    try:
        provider_ref = provider.send(reference=str(reminder.id), to=to, message=message)
    except PermanentFailure as exc:
        _fail(reminder.id, status=PERMANENT_FAILURE, reason=str(exc))
        return "failed: permanent"
    except TemporaryFailure as exc:
        if reminder.attempts >= cfg.max_send_attempts:
            _fail(reminder.id, status=TECHNICAL_FAILURE, reason=f"gave up after {reminder.attempts} attempts: {exc}")
            return "failed: technical"
        countdown = cfg.retry_base_seconds * 2 ** (reminder.attempts - 1)
        with send_transaction() as session:
            session.execute(update(Reminder).where(Reminder.id == reminder.id, Reminder.status == SENDING)
                            .values(status=QUEUED, in_doubt=False, reason=str(exc)[:200],
                                    queued_at=utcnow() + dt.timedelta(seconds=countdown)))
        raise RetryLater(countdown, str(exc)) from exc
    _mark_sent(reminder, provider_ref)
    return "sent"
