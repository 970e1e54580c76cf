"""Meeting replicas: the local copy of directory meetings kept by other services.

A replica row holds the latest snapshot per slug. Events can arrive out of order after a
retry, so an event older than the stored one is ignored; replaying all meetings is safe.
"""

from __future__ import annotations

from sqlalchemy import JSON, Boolean, Column, MetaData, String, Table, select
from sqlalchemy.orm import Session

from shared.db import UTCDateTime
from shared.events import Event, MeetingSnapshot, MeetingWithdrawn

MEETING_EVENTS = ("meeting.published", "meeting.updated", "meeting.withdrawn")


def meeting_replica_table(metadata: MetaData) -> Table:
    return Table(
        "meeting_replica",
        metadata,
        Column("slug", String(200), primary_key=True),
        Column("fellowship", String(64), nullable=False),
        Column("active", Boolean, nullable=False),
        Column("snapshot", JSON, nullable=False),
        Column("event_at", UTCDateTime(), nullable=False),
    )


def apply_meeting_event(session: Session, table: Table, event: Event) -> tuple[MeetingSnapshot | None, MeetingSnapshot]:
    """Store the event's snapshot; returns (previous snapshot or None, new snapshot).

    A stale event (older than what is stored) changes nothing and returns (stored, stored).
    """
    payload = event.parsed()
    snapshot = payload.meeting if isinstance(payload, MeetingWithdrawn) else payload
    active = event.type != "meeting.withdrawn" and snapshot.active
    if not active:
        snapshot = snapshot.model_copy(update={"active": False})
    row = session.execute(select(table).where(table.c.slug == snapshot.slug).with_for_update()).first()
    values = {"fellowship": snapshot.fellowship, "active": active,
              "snapshot": snapshot.model_dump(mode="json"), "event_at": event.occurred_at}
    if row is None:
        session.execute(table.insert().values(slug=snapshot.slug, **values))
        return None, snapshot
    previous = MeetingSnapshot.model_validate(row.snapshot)
    if row.event_at > event.occurred_at:
        return previous, previous
    session.execute(table.update().where(table.c.slug == snapshot.slug).values(**values))
    return previous, snapshot


def get_meeting(session: Session, table: Table, slug: str) -> MeetingSnapshot | None:
    row = session.execute(select(table.c.snapshot).where(table.c.slug == slug)).first()
    return None if row is None else MeetingSnapshot.model_validate(row.snapshot)
