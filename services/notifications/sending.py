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
from functools import cache, lru_cache
from types import SimpleNamespace

import redis
import structlog
from sqlalchemy import (
    JSON,
    DateTime,
    Engine,
    Integer,
    Row,
    String,
    Table,
    Uuid,
    and_,
    bindparam,
    case,
    func,
    insert,
    literal,
    or_,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy.orm import Session, sessionmaker

from services.notifications import kinds
from services.notifications.models import (
    CANCELLED,
    CREATED,
    PERMANENT_FAILURE,
    QUEUED,
    SENDING,
    SENT,
    TECHNICAL_FAILURE,
    TOO_LATE,
    OptOut,
    ReferralContact,
    Reminder,
    meeting_replica,
)
from services.notifications.providers import UNKNOWN, PermanentFailure, Provider, Record, TemporaryFailure, provider_for
from services.notifications.runtime import runtime
from services.notifications.service import HOLD, SEND, aware, fact, send_verdict, unsubscribe_url
from services.notifications.wording import Message, render
from shared import queues
from shared.db import is_sqlite, make_engine, make_sessionmaker, transaction
from shared.events import Event, MeetingSnapshot, subscribers, utcnow
from shared.redis_client import redis_client
from shared.replica import get_meeting

log = structlog.get_logger(__name__)

SEND_TASK = "notifications.send_reminders"
MAX_RETRY_SECONDS = 300


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


def send_sessions() -> sessionmaker[Session]:
    """Sessions for the send path, one pool per process and database.

    Their events (reminder.sent...) leave with the outbox sweep in batches rather than one
    relay per send. No pre-ping on checkout (a round trip per transaction): a connection
    that died with the database raises OperationalError, the pool drops it, and the task
    retries (its status guard makes the retry safe)."""
    return _send_sessions(runtime.settings.database_url)


@lru_cache(maxsize=4)
def _send_engine(url: str) -> Engine:
    return make_engine(url, pool_pre_ping=False, pool_size=2, max_overflow=4)


@lru_cache(maxsize=4)
def _send_sessions(url: str) -> sessionmaker[Session]:
    return make_sessionmaker(_send_engine(url))


@lru_cache(maxsize=4)
def _autocommit_engine(url: str) -> Engine:
    """Each statement its own transaction: a claim or a mark is one round trip. On Postgres a
    pool of its own, made autocommit once (not switched at every checkout); SQLite's engine
    opens BEGIN IMMEDIATE itself, so there it is the send pool unchanged."""
    if is_sqlite(_send_engine(url)):
        return _send_engine(url).execution_options(isolation_level="AUTOCOMMIT")
    return make_engine(url, pool_pre_ping=False, pool_size=2, max_overflow=4, isolation_level="AUTOCOMMIT")


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
    return redis_client(runtime.settings, timeout=5)


def rate_limit() -> RateLimit:
    cfg = runtime.settings
    return _rate_limit(f"{cfg.redis_key_prefix}notifications:send-rate", cfg.rate_limit_per_minute, cfg.rate_burst)


@lru_cache(maxsize=8)
def _rate_limit(key: str, per_minute: int, burst: int) -> RateLimit:
    return RateLimit(_redis(), key, per_minute, burst)


# --- dispatcher ---------------------------------------------------------------------------

def publish_sends(ids: list[uuid.UUID], *, countdown: float | None = None) -> None:
    """One send task per chunk of ``send_chunk`` reminders (a retry: one reminder, a countdown)."""
    celery, chunk = runtime.celery, runtime.settings.send_chunk
    with celery.producer_or_acquire() as producer:
        for start in range(0, len(ids), chunk):
            celery.send_task(SEND_TASK, args=[[str(i) for i in ids[start:start + chunk]]], countdown=countdown,
                             queue=queues.NOTIFICATIONS_SEND, producer=producer)


def dispatch_due(*, now: dt.datetime | None = None, batch: int | None = None) -> int:
    """Claim due reminders (created -> queued) and enqueue immediate send tasks for them.

    A backlog drains what is still useful first: reminders before a meeting, soonest meeting
    first, then follow-ups (the rate limit then decides how fast)."""
    batch = batch or runtime.settings.dispatch_batch
    total = 0
    while True:
        at = now or utcnow()
        with runtime.sessions() as session:
            query = (select(Reminder.id).where(Reminder.status == CREATED, Reminder.due_at <= at)
                     .order_by(Reminder.kind == kinds.FOLLOW_UP, Reminder.meeting_start, Reminder.due_at).limit(batch))
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
#
# A send is two short steps: the claim (queued -> sending, one statement that also reads
# the contact, opt-out and sends in the last hour), then the mark (sending -> sent with the
# reminder.sent event; with a message that is a row of ours, that row too). The claim is committed
# before the provider is called, so a crash in between leaves a "sending" row that
# recovery checks with the provider. On Postgres each step is ONE autocommitted statement
# (data-modifying CTEs); SQLite runs the same steps as a few statements in a transaction.
# Core statements built once: no ORM objects and no SQL compilation per send.

_reminders = Reminder.__table__
_contacts = ReferralContact.__table__
_outbox = runtime.outbox_table
_FACT_COLUMNS = (_reminders.c.id, _reminders.c.referral_id, _reminders.c.site_id, _reminders.c.fellowship,
                 _reminders.c.kind, _reminders.c.channel, _reminders.c.due_at, _reminders.c.reason)


def _when(name: str):
    return bindparam(name, type_=DateTime(timezone=True))


def _state_columns(referral_id, contact_hash) -> list:
    """The contact, whether the number opted out and the messages sent to it in the last hour
    (the hourly cap counts reminders' own sent_at: a message sent is a reminder marked sent)."""
    def contact(column):
        return select(column).where(_contacts.c.referral_id == referral_id).correlate(_reminders).scalar_subquery()

    earlier = _reminders.alias("earlier")
    recent = (earlier.c.contact_hash == contact_hash, earlier.c.sent_at > _when("window_start"))
    return [
        contact(_contacts.c.referral_id).label("contact_found"),
        contact(_contacts.c.contact).label("contact"),
        contact(_contacts.c.active).label("active"),
        contact(_contacts.c.detail).label("detail"),
        select(OptOut.contact_hash).where(OptOut.contact_hash == contact_hash).correlate(_reminders).exists()
        .label("opted_out"),
        select(func.count()).where(*recent).correlate(_reminders).scalar_subquery().label("sends"),
        select(func.min(earlier.c.sent_at)).where(*recent).correlate(_reminders).scalar_subquery()
        .label("oldest_send"),
    ]


def _build_claim(*, with_state: bool):
    """queued -> sending (or take over a "sending" row abandoned by a dead worker), returning
    the row and (``with_state``) its contact state. Built once: a statement object keeps its
    compiled form and cache key. SQLite's RETURNING cannot name the outer table inside a
    subquery, so there the state is a second statement (``_STATE``)."""
    r = _reminders.c
    returning = [*_FACT_COLUMNS, r.contact_hash, r.meeting_slug, r.meeting_start, r.meeting_end, r.previous_start,
                 r.attempts, r.in_doubt]
    if with_state:
        returning += _state_columns(r.referral_id, r.contact_hash)
    return (
        update(_reminders)
        .where(r.id == bindparam("reminder_id", type_=Uuid),
               or_(r.status == QUEUED, and_(r.status == SENDING, r.sending_at < _when("stale_before"))))
        .values(status=SENDING, sending_at=_when("at"), attempts=r.attempts + 1, updated_at=_when("at"),
                in_doubt=case((r.status == SENDING, True), else_=r.in_doubt))
        .returning(*returning))


def _build_mark_sent(*, only_our_claim: bool):
    r = _reminders.c
    guard = [r.id == bindparam("reminder_id", type_=Uuid), r.status == SENDING]
    if only_our_claim:
        guard.append(r.attempts == bindparam("claimed_attempts", type_=Integer))
    return update(_reminders).where(*guard).values(
        status=SENT, provider_ref=bindparam("ref", type_=String), sent_at=_when("at"), in_doubt=False, reason=None,
        updated_at=_when("at"))


@cache
def _mark_sent_statement(record_table: Table | None, record_columns: tuple[str, ...] = ()):
    """The mark, the reminder.sent outbox rows (one per subscriber) and the message's row when
    it is one of ours (``record_table``), as one statement: each insert reads the updated row,
    so if the row is no longer ours nothing is written. Returns how many reminders were marked
    (0 or 1). Built once per table: a statement object keeps its compiled form and cache key."""
    sent = _build_mark_sent(only_our_claim=record_table is not None).returning(_reminders.c.id).cte("sent")
    # One row per subscriber (a UNION of literals rather than VALUES, which SQLAlchemy cannot cache).
    subs = union_all(*(select(literal(name, String).label("subscriber")) for name in subscribers("reminder.sent"))
                     ).subquery("subscribers")
    events = insert(_outbox).from_select(
        ["event_id", "event_type", "subscriber", "body", "created_at", "attempts"],
        select(bindparam("event_id", type_=Uuid), literal("reminder.sent"), subs.c.subscriber,
               bindparam("event_body", type_=JSON), _when("at"), literal(0))
        .select_from(sent).join(subs, true())).cte("events")
    statement = select(func.count()).select_from(sent).add_cte(events)
    if record_table is not None:
        message = insert(record_table).from_select(
            record_columns,
            select(*(bindparam(f"record_{name}", type_=record_table.c[name].type) for name in record_columns))
            .select_from(sent)).cte("message")
        statement = statement.add_cte(message)
    return statement


_CLAIM = _build_claim(with_state=True)
_CLAIM_ONLY = _build_claim(with_state=False)
_STATE = select(*_state_columns(bindparam("referral_id", type_=Uuid), bindparam("contact_hash", type_=String)))
_MARK_SENT = {True: _build_mark_sent(only_our_claim=True), False: _build_mark_sent(only_our_claim=False)}


def _finish(session: Session, reminder: Row, *, status: str, reason: str, event: str) -> None:
    """End a reminder we hold in "sending" (unless another worker took it over meanwhile)."""
    reason = reason[:200]
    done = session.execute(update(_reminders).where(*_ours(reminder)).values(
        status=status, reason=reason, completed_at=utcnow(), in_doubt=False, updated_at=utcnow())).rowcount
    if done:
        runtime.outbox.record(session, event, fact(reminder, reason))


def _ours(reminder: Row):
    """The row is still in the "sending" state our claim put it in."""
    return (_reminders.c.id == reminder.id, _reminders.c.status == SENDING, _reminders.c.attempts == reminder.attempts)


def _claim(reminder_id: uuid.UUID, now: dt.datetime) -> Row | None:
    stale_before = now - dt.timedelta(seconds=runtime.settings.sending_stale_seconds)
    # begin(): Postgres commits the statement by itself (the COMMIT is a no-op); SQLite's
    # engine opens BEGIN IMMEDIATE on begin, which this commits.
    params = {"reminder_id": reminder_id, "at": now, "stale_before": stale_before,
              "window_start": now - dt.timedelta(hours=1)}
    with _autocommit_engine(runtime.settings.database_url).begin() as conn:
        if not is_sqlite(conn):
            return conn.execute(_CLAIM, params).first()
        claimed = conn.execute(_CLAIM_ONLY, params).first()
        if claimed is None:
            return None
        state = conn.execute(_STATE, {"referral_id": claimed.referral_id, "contact_hash": claimed.contact_hash,
                                      "window_start": params["window_start"]}).first()
        return SimpleNamespace(**claimed._mapping, **state._mapping)


def _prepare(reminder_id: uuid.UUID, now: dt.datetime) -> tuple[Row, str, Message] | str:
    """Claim the row and build its message, or say why there is nothing to send.

    The claim is one statement committed on its own; what follows a claim that must not
    send (opted out, no longer wanted, capped) changes the row only while it is still ours."""
    reminder = _claim(reminder_id, now)
    if reminder is None:
        with send_sessions()() as session:
            status = session.scalar(select(_reminders.c.status).where(_reminders.c.id == reminder_id))
        return f"skipped: {status or 'unknown'}"  # a duplicate or late task: nothing to do
    stop = _reason_not_to_send(reminder)
    if stop is not None:
        status, reason, event = stop
        with send_transaction() as session:
            _finish(session, reminder, status=status, reason=reason, event=event)
        return f"{'failed' if status == PERMANENT_FAILURE else 'cancelled'}: {reason}"
    if not reminder.in_doubt and reminder.sends >= runtime.settings.hourly_cap:
        allowed_at = aware(reminder.oldest_send) + dt.timedelta(hours=1, seconds=1)
        with send_transaction() as session:
            if reminder.kind in kinds.BEFORE_MEETING and allowed_at >= aware(reminder.meeting_start):
                _finish(session, reminder, status=CANCELLED, reason="hourly cap", event="reminder.cancelled")
                return "cancelled: hourly cap"
            session.execute(update(_reminders).where(*_ours(reminder)).values(
                status=CREATED, due_at=allowed_at, reason="hourly cap", queued_at=None,
                attempts=_reminders.c.attempts - 1, updated_at=now))
        return "deferred: hourly cap"
    meeting = _meeting(reminder.meeting_slug)
    if meeting is None:
        with send_transaction() as session:
            _finish(session, reminder, status=PERMANENT_FAILURE, reason="meeting unknown", event="reminder.failed")
        return "failed: meeting unknown"
    if not reminder.in_doubt:  # in doubt: the provider is asked first (send_reminder), then the clock
        held_or_ended = _hold_or_end(reminder, meeting, now)
        if held_or_ended is not None:
            return held_or_ended
    message = render(kind=reminder.kind, channel=reminder.channel, meeting=meeting,
                     start=aware(reminder.meeting_start), previous_start=aware(reminder.previous_start),
                     detail=reminder.detail, now=now, templates_dir=runtime.settings.templates_dir,
                     sender=runtime.settings.sender_name)
    if message.channel == "email":  # every email can be stopped in one click, without signing in
        url = unsubscribe_url(reminder.contact_hash)
        message = message.model_copy(update={"unsubscribe_url": url,
                                              "body": f"{message.body}\nStop these emails: {url}"})
    return reminder, reminder.contact, message


def _reason_not_to_send(reminder: Row) -> tuple[str, str, str] | None:
    """(status, reason, event) when the claimed reminder must not go out."""
    if reminder.opted_out:
        return CANCELLED, "opted out", "reminder.cancelled"
    if reminder.contact_found is None or reminder.contact is None or (
            not reminder.active and not kinds.KINDS[reminder.kind].despite_cancellation):
        return CANCELLED, "no longer wanted", "reminder.cancelled"
    return None


def _hold_or_end(reminder: Row, meeting: MeetingSnapshot, now: dt.datetime) -> str | None:
    """The clock checked again at send time (service.send_verdict): hold the claimed reminder
    in the database until it may go (created, due then: the dispatcher sends it), or end it
    "too late". Returns the outcome, or None when it may go now."""
    verdict, until, reason = send_verdict(kind=reminder.kind, start=aware(reminder.meeting_start),
                                          end=aware(reminder.meeting_end), timezone=meeting.timezone, now=now,
                                          cfg=runtime.settings)
    if verdict == SEND:
        return None
    with send_transaction() as session:
        if verdict != HOLD:
            _finish(session, reminder, status=TOO_LATE, reason=reason, event="reminder.failed")
            log.info("reminder.too_late", reminder_id=str(reminder.id), kind=reminder.kind, reason=reason)
            return f"not sent: {reason}"
        # The claim's attempt is given back: waiting is not an attempt to send.
        held = session.execute(update(_reminders).where(*_ours(reminder)).values(
            status=CREATED, due_at=until, reason=reason, queued_at=None, in_doubt=False,
            attempts=_reminders.c.attempts - 1, updated_at=now)).rowcount
        if held:
            runtime.outbox.record(session, "reminder.scheduled",
                                  fact(reminder, reason).model_copy(update={"due_at": until}))
    log.info("reminder.held", reminder_id=str(reminder.id), kind=reminder.kind, reason=reason, until=until.isoformat())
    return f"{reason} until {until.isoformat()}"


def _meeting(slug: str) -> MeetingSnapshot | None:
    hit = _meetings.get(slug)
    if hit is not None and time.monotonic() - hit[0] < MEETING_CACHE_SECONDS:
        return hit[1]
    with send_sessions()() as session:
        return cached_meeting(session, slug)


def _sent_fact(reminder: Row):
    """reminder.sent's payload: the mark clears the row's reason (an earlier deferral's), so does the event."""
    return fact(reminder, None).model_copy(update={"reason": None})


def _mark_sent(reminder: Row, provider_ref: str, *, record: Record | None = None) -> bool:
    """sending -> sent with reminder.sent (and the message's ``record``, when it is a row of
    ours), atomically. A message that has left is marked whatever happened meanwhile; a
    record is written only if no other worker took the row over since we claimed it
    (attempts still ours). Returns whether the row was marked."""
    at = utcnow()
    params = {"reminder_id": reminder.id, "claimed_attempts": reminder.attempts, "ref": provider_ref, "at": at}
    engine = _send_engine(runtime.settings.database_url)
    if not is_sqlite(engine):
        event = Event.new("reminder.sent", _sent_fact(reminder), producer=runtime.name, occurred_at=at)
        params.update(event_id=event.event_id, event_body=runtime.outbox.signed(event))  # signed like record()
        if record is not None:
            params.update({f"record_{name}": value for name, value in record.row.items()})
        statement = _mark_sent_statement(None) if record is None else _mark_sent_statement(record.table, tuple(record.row))
        with _autocommit_engine(runtime.settings.database_url).connect() as conn:
            return bool(conn.execute(statement, params).scalar_one())
    with send_transaction() as session:
        if not session.execute(_MARK_SENT[record is not None], params).rowcount:
            return False  # nothing written: the row is not ours
        if record is not None:
            session.execute(insert(record.table), record.row)
        runtime.outbox.record(session, "reminder.sent", _sent_fact(reminder), occurred_at=at)
    return True


def _send_and_mark(provider: Provider, reminder: Row, to: str, message: Message) -> str:
    """Hand the message to the provider and mark the reminder sent (the same steps for every provider)."""
    handover = provider.send(reference=str(reminder.id), to=to, message=message)
    if _mark_sent(reminder, handover.provider_ref, record=handover.record) or handover.record is None:
        return "sent"
    return "skipped: taken over"  # another worker took the row over before our record was written: its send counts


def _fail(reminder: Row, *, status: str, reason: str) -> None:
    """A failure ends the reminder only while it is still ours (not taken over meanwhile)."""
    with send_transaction() as session:
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
            _fail(reminder, status=TECHNICAL_FAILURE, reason="interrupted send with an unknown outcome")
            return "failed: outcome unknown"
        if found:
            _mark_sent(reminder, found)
            return "sent (found at the provider)"
        held_or_ended = _hold_or_end(reminder, _meeting(reminder.meeting_slug), utcnow())
        if held_or_ended is not None:
            return held_or_ended
    try:
        return _send_and_mark(provider, reminder, to, message)
    except PermanentFailure as exc:
        _fail(reminder, status=PERMANENT_FAILURE, reason=str(exc))
        return "failed: permanent"
    except TemporaryFailure as exc:
        if reminder.attempts >= cfg.max_send_attempts:
            _fail(reminder, status=TECHNICAL_FAILURE, reason=f"gave up after {reminder.attempts} attempts: {exc}")
            return "failed: technical"
        # Exponential backoff, capped: a retry stays a few minutes away at most (no far-off ETA tasks).
        countdown = min(cfg.retry_base_seconds * 2 ** (reminder.attempts - 1), MAX_RETRY_SECONDS)
        # Checked again before the retry: one that could only come too late ends now. (Quiet
        # hours are checked when the retry claims it.)
        verdict, _, reason = send_verdict(kind=reminder.kind, start=aware(reminder.meeting_start),
                                          end=aware(reminder.meeting_end), timezone=_meeting(reminder.meeting_slug).timezone,
                                          now=utcnow() + dt.timedelta(seconds=countdown), cfg=cfg)
        if verdict == TOO_LATE:
            _fail(reminder, status=TOO_LATE, reason=f"{reason} (provider: {exc})")
            return f"not sent: {reason}"
        with send_transaction() as session:
            requeued = session.execute(update(_reminders).where(*_ours(reminder)).values(
                status=QUEUED, in_doubt=False, reason=str(exc)[:200], updated_at=utcnow(),
                queued_at=utcnow() + dt.timedelta(seconds=countdown))).rowcount
        if not requeued:
            return "skipped: taken over"  # another worker holds the row now: its attempt counts
        raise RetryLater(countdown, str(exc)) from exc
