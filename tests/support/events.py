"""Events as their producer would send them (signed with this run's keys), for tests that
put events on the broker by hand."""

from __future__ import annotations

from shared.events import Event, sign
from shared.settings import ServiceSettings


def signed(event: Event, *, keys: str | None = None) -> dict:
    """``event``'s envelope signed with its producer's key (or with ``keys``, newest first)."""
    return sign(event.model_dump(mode="json"), keys or ServiceSettings().event_keys()[event.producer])
