"""Transactional outbox: events are rows written with the state change that caused them.

``Outbox.record`` adds one row per subscriber in the caller's transaction, so an event
exists if and only if its change was committed. In a session whose commits this process relays
(``relay_after_commit``), the rows are written already marked relayed and are sent from memory
right after the commit: the mark costs no transaction of its own. A send that fails puts them
back to unrelayed, for the periodic sweep (``Outbox.sweep``), which also sends the rows of
sessions that leave their events to it. A crash between the commit and the send leaves rows
marked relayed that were never sent: ``Outbox.confirm`` sends them, as it does any event without
a receipt, after ``OUTBOX_RESEND_SECONDS`` (300 s by default) rather than the sweep's second or
two. That delay, after a crash only, is the price of the transaction saved at every commit.

Being on the broker is not being processed: Redis hands a message to a worker before the
worker records it as unacknowledged, so a worker killed in that instant (or a broker
restart then) can drop it. Each consumer therefore leaves a receipt in Redis once an event
is in its inbox, and ``Outbox.confirm`` sends again whatever has no receipt after a while
(with backoff). A second delivery is harmless: the inbox ignores it.

The relay groups a subscriber's events: up to ``RELAY_BATCH`` of them go in one Celery
message (task ``<subscriber>.handle_events``), because publishing a message costs far more
than the event in it. Each event keeps its own envelope, inbox row and receipt; a batch of
one is sent as a plain ``<subscriber>.handle_event`` message.

Each row holds the envelope as its subscriber may see it (``events.for_subscriber``: the
sealed contact of ``referral.created`` goes to notifications only), signed with the
producer's key. Once a subscriber has confirmed a row, its personal fields are cleared;
``erase_personal`` clears them at once from every row about a referral whose contact is
erased; ``prune`` deletes rows confirmed longer ago than the retention.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import structlog
from celery import Celery
from sqlalchemy import (
    JSON,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Uuid,
    delete,
    event,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.orm import Session, sessionmaker

from shared import queues
from shared.db import UTCDateTime, transaction
from shared.events import (
    CATALOGUE,
    PERSONAL_TYPES,
    Event,
    Payload,
    for_subscriber,
    has_personal,
    sign,
    subscribers,
    utcnow,
    without_personal,
)

log = structlog.get_logger(__name__)

PENDING_KEY = "outbox_pending"
# In the info of a session whose commits this process relays (set by ``relay_after_commit``).
RELAYS_KEY = "outbox_relays_after_commit"


class Recorded(NamedTuple):
    """An outbox row written by this process's session, kept in memory until it is relayed."""

    event_id: uuid.UUID
    subscriber: str
    body: dict


def outbox_table(metadata: MetaData) -> Table:
    return Table(
        "outbox",
        metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("event_id", Uuid, nullable=False),
        Column("event_type", String(64), nullable=False),
        Column("subscriber", String(32), nullable=False),
        Column("body", JSON, nullable=False),
        Column("created_at", UTCDateTime(), nullable=False),
        Column("relayed_at", UTCDateTime(), nullable=True),
        Column("attempts", Integer, nullable=False, default=0),
        Column("confirmed_at", UTCDateTime(), nullable=True),
        Index("ix_outbox_unrelayed", "relayed_at", "id"),
        Index("ix_outbox_unconfirmed", "confirmed_at", "relayed_at"),
    )


# Most events in one relayed message (one subscriber's, in id order).
RELAY_BATCH = 100
SEND_RETRY_POLICY = {"max_retries": 3, "interval_start": 0, "interval_step": 0.5, "interval_max": 2}

RECEIPT_TTL_SECONDS = 7 * 24 * 3600
# Unconfirmed events older than this are no longer chased (their receipts have expired).
CONFIRM_WINDOW = dt.timedelta(days=6)


def receipt_key(prefix: str, subscriber: str, event_id) -> str:
    return f"{prefix}fama:receipt:{subscriber}:{event_id}"


def receipt_commands(client, prefix: str, subscriber: str, event_id) -> None:
    """The receipt a consumer leaves once the event is in its inbox (on a client or a pipeline)."""
    client.set(receipt_key(prefix, subscriber, event_id), 1, ex=RECEIPT_TTL_SECONDS)


def _within(savepoint, transaction) -> bool:
    """Whether ``savepoint`` (a SessionTransaction, or None for none) is ``transaction`` or inside it."""
    while savepoint is not None:
        if savepoint is transaction:
            return True
        savepoint = savepoint.parent
    return False


def batches(rows: Sequence) -> list[tuple[str, list]]:
    """``rows`` (in id order, each with ``.subscriber``) as (subscriber, chunk) pairs: one
    subscriber's rows per chunk, in id order, at most ``RELAY_BATCH``; chunks ordered by their
    first row, so a relay that stops at a failed chunk has sent the oldest rows."""
    by_subscriber: dict[str, list] = {}
    for row in rows:
        by_subscriber.setdefault(row.subscriber, []).append(row)
    chunks = [(sub, sub_rows[i:i + RELAY_BATCH])
              for sub, sub_rows in by_subscriber.items() for i in range(0, len(sub_rows), RELAY_BATCH)]
    chunks.sort(key=lambda chunk: chunk[1][0].id)
    return chunks


class Outbox:
    def __init__(self, table: Table, celery: Celery, *, producer: str, signing_keys: str):
        self.table = table
        self.celery = celery
        self.producer = producer
        self.signing_keys = signing_keys  # this producer's keys, newest (the one that signs) first

    def body_for(self, evt: Event, subscriber: str) -> dict:
        """The signed envelope ``subscriber`` receives (without personal fields it may not see)."""
        return sign(for_subscriber(evt.model_dump(mode="json"), subscriber), self.signing_keys)

    def signed(self, evt: Event) -> dict:
        """The signed envelope of an event without personal fields (every subscriber sees the same)."""
        if CATALOGUE[evt.type].personal:
            raise ValueError(f"{evt.type} carries personal fields: use body_for(event, subscriber)")
        return sign(evt.model_dump(mode="json"), self.signing_keys)

    def record(self, session: Session, event_type: str, payload: Payload, *, occurred_at: dt.datetime | None = None) -> Event:
        """Write the event in the session's transaction; it is sent only if that commits."""
        return self.record_many(session, event_type, [payload], occurred_at=occurred_at)[0]

    def record_many(self, session: Session, event_type: str, payloads: Sequence[Payload], *,
                    occurred_at: dt.datetime | None = None) -> list[Event]:
        """``record`` for several events of one type, in one statement (a plan's reminders).

        If this process relays the session's commits, the rows are written marked relayed, with
        the send that follows the commit counted in ``attempts``, and kept in memory for it;
        otherwise they are left unrelayed for the sweep."""
        if event_type in CATALOGUE and CATALOGUE[event_type].producer != self.producer:
            raise ValueError(f"{event_type} is produced by {CATALOGUE[event_type].producer}, not {self.producer}")
        events = [Event.new(event_type, payload, producer=self.producer, occurred_at=occurred_at) for payload in payloads]
        now = utcnow()
        relays = session.info.get(RELAYS_KEY, False)
        rows = [
            {
                "event_id": evt.event_id,
                "event_type": event_type,
                "subscriber": sub,
                "body": self.body_for(evt, sub),
                "created_at": now,
                "relayed_at": now if relays else None,
                "attempts": 1 if relays else 0,
            }
            for evt in events
            for sub in subscribers(event_type)
        ]
        if rows:
            session.execute(self.table.insert(), rows)
            if relays:  # with the savepoint they were written in, if any: undone if it is rolled back
                session.info.setdefault(PENDING_KEY, []).append(
                    (session.get_nested_transaction(), [Recorded(r["event_id"], r["subscriber"], r["body"]) for r in rows]))
        return events

    def send(self, subscriber: str, body: dict) -> None:
        """One event to ``subscriber``'s queue."""
        self.send_batch(subscriber, [body])

    def send_batch(self, subscriber: str, bodies: Sequence[dict]) -> None:
        """One message with ``bodies`` to ``subscriber``'s queue: a single event as
        ``handle_event`` (args=[body]), several as ``handle_events`` (args=[bodies])."""
        if not bodies:
            return
        # The header Flower shows: the events, not a repr of their payloads (cheaper too).
        if len(bodies) == 1:
            body = bodies[0]
            name, args, argsrepr = queues.event_task(subscriber), [body], f"[<{body.get('type')} {body.get('event_id')}>]"
        else:
            types = " ".join(dict.fromkeys(str(b.get("type")) for b in bodies))
            name, args, argsrepr = queues.events_batch_task(subscriber), [list(bodies)], f"[<{len(bodies)} events: {types}>]"
        self.celery.send_task(name, args=args, queue=queues.events_queue(subscriber), retry=True,
                              retry_policy=SEND_RETRY_POLICY, argsrepr=argsrepr, kwargsrepr="{}")

    def relay(self, factory: sessionmaker[Session], *, event_ids: Iterable | None = None,
              older_than: dt.timedelta | None = None, limit: int = 500) -> int:
        """Send unrelayed rows (all, or those of ``event_ids``) and mark them relayed.

        On Postgres the rows are claimed with FOR UPDATE SKIP LOCKED, so two relays never
        send the same row at the same time; SQLite serialises writers. Rows go in batches
        (``batches``: one message per subscriber and up to ``RELAY_BATCH`` rows). A batch that
        fails to send leaves its rows, and those after it, for the next sweep. Returns the
        number of rows relayed.
        """
        t = self.table
        query = select(t.c.id, t.c.subscriber, t.c.body).where(t.c.relayed_at.is_(None)).order_by(t.c.id).limit(limit)
        if event_ids is not None:
            ids = list(event_ids)
            if not ids:
                return 0
            query = query.where(t.c.event_id.in_(ids))
        if older_than is not None:
            query = query.where(t.c.created_at <= utcnow() - older_than)
        with transaction(factory) as session:
            if session.get_bind().dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            sent_ids = []
            for subscriber, chunk in batches(session.execute(query).all()):
                ids = [row.id for row in chunk]
                try:
                    self.send_batch(subscriber, [row.body for row in chunk])
                except Exception as exc:  # broker down: the sweep tries again
                    session.execute(update(t).where(t.c.id.in_(ids)).values(attempts=t.c.attempts + 1))
                    log.warning("outbox.send_failed", outbox_id=ids[0], events=len(ids), error=type(exc).__name__)
                    break
                sent_ids.extend(ids)
            if sent_ids:  # one statement for all that were sent
                session.execute(update(t).where(t.c.id.in_(sent_ids)).values(relayed_at=utcnow(), attempts=t.c.attempts + 1))
        relayed = len(sent_ids)
        return relayed

    def _put_back(self, session: Session, rows: Sequence[Recorded]) -> None:
        """Rows committed marked relayed whose send failed, back to unrelayed for the sweep (found
        through the unconfirmed rows' index: they are recent and not confirmed)."""
        t = self.table
        session.execute(update(t).where(
            t.c.confirmed_at.is_(None), t.c.relayed_at.is_not(None),
            tuple_(t.c.event_id, t.c.subscriber).in_([(r.event_id, r.subscriber) for r in rows]),
        ).values(relayed_at=None))

    def sweep(self, factory: sessionmaker[Session], *, older_than: dt.timedelta = dt.timedelta(seconds=2)) -> int:
        """Relay every row left unrelayed: recorded by a session whose commits are not relayed
        (a process that relays its commits records them marked relayed), or put back after a failed
        send. Rows marked relayed by a process that died before sending them are ``confirm``'s."""
        total = 0
        while True:
            n = self.relay(factory, older_than=older_than)
            total += n
            if n < 500:
                return total

    def relay_after_commit(self, factory: sessionmaker[Session]) -> None:
        """Relay each committed session's events at once, outside its transaction. The sessions of
        ``factory`` then record their events marked relayed (``record``)."""
        factory.configure(info={**factory.kw.get("info", {}), RELAYS_KEY: True})

        @event.listens_for(factory, "after_commit")
        def _after_commit(session: Session) -> None:
            if session.get_nested_transaction() is not None:
                return  # a savepoint released: its rows are committed only with the whole transaction
            pending = session.info.pop(PENDING_KEY, None)
            if pending:
                session.info.setdefault("outbox_committed", []).extend(row for _, rows in pending for row in rows)

        @event.listens_for(factory, "after_soft_rollback")
        def _after_rollback(session: Session, previous_transaction) -> None:
            if previous_transaction.parent is None:
                session.info.pop(PENDING_KEY, None)
            elif previous_transaction.nested and session.info.get(PENDING_KEY):
                # A savepoint rolled back (a held feed import): its rows are gone, so are their sends.
                session.info[PENDING_KEY] = [(savepoint, rows) for savepoint, rows in session.info[PENDING_KEY]
                                             if not _within(savepoint, previous_transaction)]

        # after_commit runs while the connection is still being released, so the send happens
        # when the session hands back its connection (after_transaction_end of the root).
        @event.listens_for(factory, "after_transaction_end")
        def _after_end(session: Session, transaction) -> None:
            if transaction.parent is not None:
                return
            committed = session.info.pop("outbox_committed", None)
            if not committed:
                return
            try:
                self.relay_recorded(factory, committed)
            except Exception as exc:
                log.warning("outbox.relay_after_commit_failed", error=type(exc).__name__)

    def relay_recorded(self, factory: sessionmaker[Session], rows: Sequence[Recorded]) -> int:
        """Send rows this process has just committed, from memory: the relay of every commit.

        The rows were committed already marked relayed (``record``), so a send that succeeds
        needs no transaction at all, no claim and no read of what was written. Rows whose send
        fails (and every row after them) are put back to unrelayed in one small transaction, so
        the sweep sends them within seconds. Should the process die before the send, or that
        transaction fail, they stay marked but unsent, and ``confirm`` sends them again once
        ``resend_after`` has passed without a receipt: a few minutes late, never lost; a copy
        that did arrive meanwhile is absorbed by the inbox. Returns the number of rows sent.
        """
        by_subscriber: dict[str, list[Recorded]] = {}
        for row in rows:
            by_subscriber.setdefault(row.subscriber, []).append(row)
        sent, failed = 0, []
        for subscriber, sub_rows in by_subscriber.items():
            for i in range(0, len(sub_rows), RELAY_BATCH):
                chunk = sub_rows[i:i + RELAY_BATCH]
                if failed:
                    failed.extend(chunk)
                    continue
                try:
                    self.send_batch(subscriber, [row.body for row in chunk])
                except Exception as exc:  # broker down: the sweep tries again
                    log.warning("outbox.send_failed", events=len(chunk), error=type(exc).__name__)
                    failed.extend(chunk)
                    continue
                sent += len(chunk)
        if failed:
            with transaction(factory) as session:
                self._put_back(session, failed)
        return sent

    def confirm(self, factory: sessionmaker[Session], client, *, prefix: str, resend_after: dt.timedelta,
                limit: int = 1000) -> dict[str, int]:
        """Mark relayed rows whose subscriber left a receipt; send again those that have none
        after ``resend_after`` (doubling each time), so a message the broker dropped is not lost,
        nor one never sent because its process died between the commit and the send (``record``
        marks rows relayed in the commit). Resends are batched like the relay's sends."""
        t = self.table
        now = utcnow()
        confirmed = resent = 0
        with transaction(factory) as session:
            query = (select(t.c.id, t.c.event_id, t.c.subscriber, t.c.body, t.c.relayed_at, t.c.attempts)
                     .where(t.c.relayed_at.is_not(None), t.c.confirmed_at.is_(None),
                            t.c.relayed_at <= now - resend_after / 4, t.c.created_at >= now - CONFIRM_WINDOW)
                     .order_by(t.c.id).limit(limit))
            if session.get_bind().dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            rows = session.execute(query).all()
            receipts = client.mget([receipt_key(prefix, r.subscriber, r.event_id) for r in rows]) if rows else []
            done = [r for r, receipt in zip(rows, receipts, strict=True) if receipt is not None]
            if done:
                session.execute(update(t).where(t.c.id.in_([r.id for r in done])).values(confirmed_at=now))
                # Delivered: the sealed personal data has no reason to stay here.
                self._clear_personal(session, [r for r in done if has_personal(r.body)])
                confirmed = len(done)
            due = [row for row, receipt in zip(rows, receipts, strict=True)
                   if receipt is None and row.relayed_at <= now - resend_after * 2 ** min(max(row.attempts - 1, 0), 6)]
            for subscriber, chunk in batches(due):
                ids = [row.id for row in chunk]
                try:
                    self.send_batch(subscriber, [row.body for row in chunk])
                except Exception as exc:
                    log.warning("outbox.resend_failed", outbox_id=ids[0], events=len(ids), error=type(exc).__name__)
                    break
                session.execute(update(t).where(t.c.id.in_(ids)).values(relayed_at=utcnow(), attempts=t.c.attempts + 1))
                resent += len(ids)
        if resent:
            log.warning("outbox.resent_unconfirmed", count=resent, producer=self.producer)
        return {"confirmed": confirmed, "resent": resent}

    def _clear_personal(self, session: Session, rows: Sequence) -> int:
        """Rewrite each row's body without its personal fields (signed again: it may still be resent)."""
        t = self.table
        for row in rows:
            session.execute(update(t).where(t.c.id == row.id)
                            .values(body=sign(without_personal(row.body), self.signing_keys)))
        return len(rows)

    def erase_personal(self, session: Session, *, referral_ids: Iterable) -> int:
        """Clear the personal fields of every row about these referrals, in the caller's
        transaction (the contact is being erased). Returns the number of rows changed."""
        ids = [str(i) for i in referral_ids]
        if not ids:
            return 0
        t = self.table
        query = select(t.c.id, t.c.body).where(t.c.event_type.in_(PERSONAL_TYPES),
                                              t.c.body[("payload", "referral_id")].as_string().in_(ids))
        return self._clear_personal(session, [r for r in session.execute(query).all() if has_personal(r.body)])

    def prune(self, factory: sessionmaker[Session], *, retention: dt.timedelta) -> int:
        """Delete rows confirmed more than ``retention`` ago, and relayed rows never confirmed
        that are older than both the retention and the confirm window (no longer chased)."""
        t = self.table
        now = utcnow()
        cutoff = now - retention
        with transaction(factory) as session:
            return session.execute(delete(t).where(t.c.relayed_at.is_not(None), or_(
                t.c.confirmed_at <= cutoff, t.c.created_at <= min(cutoff, now - CONFIRM_WINDOW)))).rowcount

    def unrelayed(self, session: Session) -> int:
        from sqlalchemy import func

        return session.scalar(select(func.count()).select_from(self.table).where(self.table.c.relayed_at.is_(None))) or 0
