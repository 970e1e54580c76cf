"""Read what sits on a Celery queue in Redis, without consuming it (tests only)."""

from __future__ import annotations

import base64
import json

import redis


def queued_messages(client: redis.Redis, prefix: str, queue: str) -> list[dict]:
    """Each waiting message on ``queue``, oldest (next to be taken) first, as
    {"task": name, "args": [...], "raw": str}."""
    out = []
    # Kombu pushes on the left and workers pop from the right: the list is newest first.
    for raw in reversed(client.lrange(f"{prefix}{queue}", 0, -1)):
        raw = raw.decode() if isinstance(raw, bytes) else raw
        message = json.loads(raw)
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body).decode()
        args, _kwargs, _embed = json.loads(body)
        out.append({"task": message["headers"]["task"], "args": args, "raw": raw})
    return out


def event_bodies(message: dict) -> list[dict]:
    """The events in a message of an events queue: one (``handle_event``) or a batch (``handle_events``)."""
    return list(message["args"][0]) if message["task"].endswith(".handle_events") else [message["args"][0]]
