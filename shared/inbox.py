"""Idempotent consumption: an event's effects and its inbox row commit together.

The inbox row is inserted first, so a second delivery of the same event (even a
concurrent one) fails on the primary key and its transaction is rolled back whole.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog
from sqlalchemy import Column, MetaData, String, Table, Uuid
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from shared.db import UTCDateTime
from shared.events import Event, utcnow

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
