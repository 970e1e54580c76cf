"""Event handlers: each applies one event inside the inbox transaction."""

from shared.inbox import Handler

HANDLERS: dict[str, Handler] = {}
