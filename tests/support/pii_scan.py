"""Look for personal data in clear wherever FAMA keeps anything: databases, Redis, logs."""

from __future__ import annotations

import re

import redis
from sqlalchemy import Engine, inspect, text


def variants(value: str) -> set[str]:
    """Forms a phone number or email could take in clear (E.164, national, digits only)."""
    found = {value, value.lower()}
    digits = re.sub(r"\D", "", value)
    if len(digits) >= 10:
        national = "0" + digits[2:] if digits.startswith("44") else digits
        found |= {digits, national, national[1:], national[:5] + " " + national[5:]}
    return {v for v in found if len(v) >= 6}


def scan_database(engine: Engine, secrets: list[str]) -> list[str]:
    needles = set().union(*(variants(s) for s in secrets))
    hits = []
    with engine.connect() as conn:
        for table in inspect(conn).get_table_names():
            for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                blob = " ".join(str(v) for v in row)
                hits += [f"{engine.url.database}.{table}: {n}" for n in needles if n in blob]
    return hits


def scan_redis(client: redis.Redis, prefix: str, secrets: list[str]) -> list[str]:
    needles = set().union(*(variants(s) for s in secrets))
    hits = []
    for key in client.scan_iter(match=f"{prefix}*", count=500):
        kind = client.type(key)
        kind = kind.decode() if isinstance(kind, bytes) else kind
        if kind == "string":
            values = [client.get(key)]
        elif kind == "list":
            values = client.lrange(key, 0, -1)
        elif kind == "hash":
            values = list(client.hgetall(key).values())
        elif kind == "set":
            values = list(client.smembers(key))
        elif kind == "zset":
            values = client.zrange(key, 0, -1)
        else:
            values = []
        blob = " ".join(v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in values)
        blob += " " + (key.decode() if isinstance(key, bytes) else key)
        hits += [f"redis {key!r}: {n}" for n in needles if n in blob]
    return hits


def scan_text(label: str, content: str, secrets: list[str]) -> list[str]:
    needles = set().union(*(variants(s) for s in secrets))
    return [f"{label}: {n}" for n in needles if n in content]
