"""Idempotent consumption: an event's effects and its inbox row commit together.

The inbox row is inserted first, so a second delivery of the same event (even a
concurrent one) fails on the primary key and its transaction is rolled back whole.
A row keeps the event's id and type, never its payload, and is pruned after a retention
far longer than any redelivery (``prune``).

Before that, a consumer refuses a message that is not an authentic event for it
(``events.refusal``): no effect, no inbox row, a log line without the payload and a count
in ``fama_events_refused_total``; the task then ends normally so a forgery does not loop.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import structlog
from prometheus_client import Counter
from sqlalchemy import Column, MetaData, String, Table, Uuid, delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from shared.db import UTCDateTime, dialect_insert, transaction
from shared.events import Event, refusal, utcnow

log = structlog.get_logger(__name__)

Handler = Callable[[Session, Event], None]


def inbox_table(metadata: MetaData) -> Table:
    return Table(
        "inbox",
        metadata,
        Column("event_id", Uuid, primary_key=True),
        Column("event_type", String(64), nullable=False),
        Column("processed_at", UTCDateTime(), nullable=False),
    )


EVENTS_REFUSED = Counter("fama_events_refused_total", "Event messages refused as not authentic",
                         ["consumer", "reason"])


def refused(body: object, *, consumer: str, keys_of: dict[str, str]) -> str | None:
    """The reason ``consumer`` refuses this message (logged and counted), or None to go on."""
    reason = refusal(body, consumer=consumer, keys_of=keys_of)
    if reason is not None:
        EVENTS_REFUSED.labels(consumer=consumer, reason=reason).inc()
        fields = body if isinstance(body, dict) else {}
        # Ids and names only: the payload could quote personal data.
        log.warning("event.refused", reason=reason, consumer=consumer, event_id=str(fields.get("event_id"))[:64],
                    event_type=str(fields.get("type"))[:64], producer=str(fields.get("producer"))[:64])
    return reason


def prune(factory: sessionmaker[Session], inbox: Table, *, retention: dt.timedelta) -> int:
    """Delete inbox rows processed more than ``retention`` ago."""
    with transaction(factory) as session:
        return session.execute(delete(inbox).where(inbox.c.processed_at <= utcnow() - retention)).rowcount


def claim_new(session: Session, inbox: Table, events: list[Event]) -> set | None:
    """Insert the inbox rows of ``events`` in one statement, skipping those already there (a
    concurrent delivery's row is waited for: committed, it is skipped), in the session's transaction.
    Returns the ids inserted, or None where the database has no ``ON CONFLICT DO NOTHING``."""
    dialect = session.get_bind().dialect.name
    if dialect not in ("postgresql", "sqlite"):
        return None
    now = utcnow()
    rows = [{"event_id": e.event_id, "event_type": e.type, "processed_at": now} for e in events]
    statement = dialect_insert(dialect, inbox).values(rows).on_conflict_do_nothing(index_elements=["event_id"])
    return set(session.execute(statement.returning(inbox.c.event_id)).scalars())


def consume(session: Session, inbox: Table, event: Event, handlers: dict[str, Handler]) -> bool:
    """Apply ``event`` once and commit. Returns False if it had been processed already."""
    try:
        session.execute(inbox.insert().values(event_id=event.event_id, event_type=event.type, processed_at=utcnow()))
        session.flush()
    except IntegrityError:
        session.rollback()
        log.info("event.duplicate_ignored", event_id=str(event.event_id), event_type=event.type)
        return False
    handler = handlers.get(event.type)
    if handler is not None:
        handler(session, event)
    else:
        log.info("event.no_handler", event_type=event.type)
    try:
        session.commit()
    except IntegrityError:
        # A concurrent delivery of the same event committed first.
        session.rollback()
        return False
    log.info("event.processed", event_id=str(event.event_id), event_type=event.type)
    return True
