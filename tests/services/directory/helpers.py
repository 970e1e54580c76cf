"""Shared bits of the directory tests."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from services.directory.runtime import runtime

FEEDS = Path(__file__).resolve().parents[2] / "fixtures" / "feeds"


def meeting(**overrides) -> dict:
    body = {
        "slug": "croydon-smart-tuesday", "name": "SMART Recovery Croydon", "fellowship": "smart", "day": 2,
        "time": "14:00", "end_time": "15:30", "types": ["O", "D"], "attendance_option": "in_person",
        "location": "Community Recovery Hub", "postcode": "CR0 1AB", "latitude": 51.372, "longitude": -0.074,
    }
    body.update(overrides)
    return body


def outbox_events() -> list[tuple[str, dict]]:
    """(type, payload) of every event the directory recorded, once per event."""
    t = runtime.outbox_table
    with runtime.sessions() as session:
        rows = session.execute(select(t.c.event_id, t.c.event_type, t.c.body).order_by(t.c.id)).all()
    seen, out = set(), []
    for row in rows:
        if row.event_id not in seen:
            seen.add(row.event_id)
            out.append((row.event_type, row.body["payload"]))
    return out


def fix_rounding(point: int) -> None:
    """Make every counter's secret rounding draw ``point`` (0-4), so a test knows which way it rounds.

    4 never rounds up (1-4 show as "<5", 6 as 5); 2 rounds to the nearest 5 (3 -> 5, 7 -> 5, 8 -> 10).
    """
    from sqlalchemy import text

    with runtime.engine.begin() as conn:
        conn.execute(text("UPDATE engagement_counts SET rounding_point = :point"), {"point": point})
