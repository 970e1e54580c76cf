"""Public answers kept for the minute: the meeting search and a meeting's JSON, as sent.

Both are anonymous and read-mostly, and computing one costs a thread, two queries and the
next start of every result (docs/PERFORMANCE.md), while a served copy costs a dictionary
look-up. A copy is served only while all of these still hold:

- the same path and query string;
- the same minute: meetings start on whole minutes, so "next start" and "happening" can only
  change when the minute does;
- nothing they show changed since: every change of a meeting (create, update, withdraw, import)
  or of the postcodes loaded bumps a counter in this process and in Redis after its commit
  (``changed``), and each request reads the Redis one, so every API process sees a change from
  its next request on.

If Redis cannot be read, nothing is served from the copies.
"""

from __future__ import annotations

import time
from collections import OrderedDict

import redis
import structlog
from sqlalchemy import event
from sqlalchemy.orm import Session
from starlette.requests import Request

from services.directory.runtime import runtime
from shared.web import PUBLIC_LIMIT

log = structlog.get_logger(__name__)

MAX_BYTES = 8 * 1024 * 1024  # what one process keeps, at most (least recently used dropped first)

_local_changes = 0  # meeting changes committed by this process
STAMP = "fama.answer_stamp"  # scope key: the stamp read for this request, under which its answer is kept


def version_key() -> str:
    return f"{runtime.settings.redis_key_prefix}directory:meetings-version"


class Answers:
    def __init__(self, max_bytes: int = MAX_BYTES):
        self.max_bytes, self.size = max_bytes, 0
        self.kept: OrderedDict[str, tuple[tuple, bytes]] = OrderedDict()

    def get(self, key: str, stamp: tuple) -> bytes | None:
        found = self.kept.get(key)
        if found is None or found[0] != stamp:
            return None
        self.kept.move_to_end(key)
        return found[1]

    def put(self, key: str, stamp: tuple, body: bytes) -> None:
        old = self.kept.pop(key, None)
        if old is not None:
            self.size -= len(old[1])
        self.kept[key] = (stamp, body)
        self.size += len(body)
        while self.size > self.max_bytes and self.kept:
            _, (_, dropped) = self.kept.popitem(last=False)
            self.size -= len(dropped)


answers = Answers()


def key_of(scope) -> str:
    """Answers are kept per path and query string, as sent."""
    return f"{scope['path']}?{scope['query_string'].decode('latin-1')}"


async def stamp(request: Request) -> tuple | None:
    """What a kept answer must have been made under to be served now; None: serve nothing kept.

    Read in the round trip that counts the request against the public rate limit (and raises its
    429), so a kept answer costs one Redis command in all."""
    answered, shared = await PUBLIC_LIMIT.count(request, also_read=version_key())
    if not answered:  # the limiter lets the request through; nothing kept is served
        return None
    return (int(time.time() // 60), _local_changes, shared)


def changed(session: Session) -> None:
    """Mark the session's transaction as changing what the answers say (meetings, postcodes): once it
    commits, the kept answers are stale."""
    if not session.info.get("meetings_changed"):
        session.info["meetings_changed"] = True
        event.listen(session, "after_commit", _after_commit, once=True)


def _after_commit(session: Session) -> None:
    global _local_changes
    session.info.pop("meetings_changed", None)
    _local_changes += 1
    try:
        runtime.redis.incr(version_key())
    except redis.RedisError as exc:  # other processes see the change when the minute turns
        log.warning("answers.version_not_bumped", error=type(exc).__name__)
