"""Read what sits on a Celery queue in Redis, without consuming it (tests only)."""

from __future__ import annotations

import base64
import json

import redis


def queued_messages(client: redis.Redis, prefix: str, queue: str) -> list[dict]:
    """Each waiting message on ``queue`` as {"task": name, "args": [...], "raw": str}."""
    out = []
    for raw in client.lrange(f"{prefix}{queue}", 0, -1):
        raw = raw.decode() if isinstance(raw, bytes) else raw
        message = json.loads(raw)
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body).decode()
        args, _kwargs, _embed = json.loads(body)
        out.append({"task": message["headers"]["task"], "args": args, "raw": raw})
    return out
