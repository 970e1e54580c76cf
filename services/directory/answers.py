"""Public answers kept until they could read differently: the meeting search and a meeting's
JSON, as sent.

Both are anonymous and read-mostly, and computing one costs a thread, two queries and the
next start of every result (docs/PERFORMANCE.md), while a served copy costs a dictionary
look-up. A copy is served only while all of these still hold:

- the same path and query string;
- no moment at which an answer can change with the clock has come since it was made
  (``kept_until``): what an answer shows of time ("next start", "happening", "starting soon",
  the soonest-first order, "today") turns only when some meeting starts or ends, an hour before
  a start, an hour after a start (a meeting without an end time), or at midnight; all of these
  are on whole minutes. Those minutes of the day, of every meeting's usual and exceptional times,
  whatever the day, are the moments: a superset of the real ones, so an answer is never kept past
  one;
- nothing they show changed since: every change of a meeting (create, update, withdraw, import)
  or of the postcodes loaded bumps a counter in this process and writes a new mark in Redis after
  its commit (``changed``), and each request reads the Redis one, so every API process sees a change
  from its next request on;
- at most ``MAX_KEPT_MINUTES`` old, in case a change's mark could not be written.

If Redis cannot be read, nothing is served from the copies.
"""

from __future__ import annotations

import bisect
import datetime as dt
import threading
import time
import uuid
from collections import OrderedDict
from typing import NamedTuple
from zoneinfo import ZoneInfo

import redis
import structlog
from sqlalchemy import event, select
from sqlalchemy.orm import Session
from starlette.requests import Request

from services.directory.models import Meeting
from services.directory.runtime import runtime
from services.directory.search import SOON, SORT_ZONE, USUAL_LENGTH, length_of
from shared.meeting_time import exceptions_of, local_start, parse_hhmm
from shared.web import PUBLIC_LIMIT

log = structlog.get_logger(__name__)

# What one process keeps, at most, of each (least recently used dropped first): searches and meetings
# apart, so a run of searches asked once (a keyworker typing postcodes) never pushes out the meetings.
SEARCH_BYTES = MEETING_BYTES = RESULT_BYTES = 4 * 1024 * 1024

_local_changes = 0  # meeting changes committed by this process
KEEPING = "fama.answer_keeping"  # scope key: the Keeping under which this request's answer is kept


def version_key() -> str:
    return f"{runtime.settings.redis_key_prefix}directory:meetings-version"


class Answers:
    """At most ``max_bytes`` of answers. When full, the least recently used go first, but an answer
    asked fewer times than one it would push out is not kept (TinyLFU's admission): a run of searches
    asked once or twice never pushes out those asked all day. The counts halve now and then, so what
    was popular yesterday gives way. Safe to share between threads (the results are kept from the
    endpoints' worker threads)."""

    def __init__(self, max_bytes: int, *, max_asked: int = 20_000):
        self.max_bytes, self.size, self.max_asked = max_bytes, 0, max_asked
        self.kept: OrderedDict[str, list] = OrderedDict()  # key: [stamp, until, body, times asked]
        self.asked: dict[str, int] = {}  # times asked, of answers made but not kept
        self._lock = threading.Lock()

    def get(self, key: str, stamp: tuple, minute: int) -> bytes | None:
        with self._lock:
            found = self.kept.get(key)
            if found is None or found[0] != stamp or minute >= found[1]:
                return None
            found[3] += 1
            self.kept.move_to_end(key)
            return found[2]

    def put(self, key: str, stamp: tuple, until: int, body: bytes, *, minute: int) -> bool:
        """Keep ``body`` for ``key`` under ``stamp`` up to (not including) the minute ``until``, if it
        earns its place; whether it was kept. What can no longer be served (another stamp, its minute
        passed) makes room first, whatever its count."""
        with self._lock:
            return self._put(key, stamp, until, body, minute)

    def _put(self, key: str, stamp: tuple, until: int, body: bytes, minute: int) -> bool:
        asked = self.asked.pop(key, 0) + 1
        old = self.kept.pop(key, None)
        if old is not None:
            self.size -= len(old[2])
            asked = max(asked, old[3])
        need, victims = self.size + len(body) - self.max_bytes, []
        for kept_key, (kept_stamp, kept_until, kept_body, kept_asked) in self.kept.items():  # least recent first
            if need <= 0:
                break
            if kept_stamp == stamp and minute < kept_until and kept_asked >= asked:
                break  # it would push out an answer asked as often: not kept
            victims.append(kept_key)
            need -= len(kept_body)
        if need > 0:
            self._count(key, asked)
            return False
        for victim in victims:
            self.size -= len(self.kept.pop(victim)[2])
        self.kept[key] = [stamp, until, body, asked]
        self.size += len(body)
        return True

    def _count(self, key: str, asked: int) -> None:
        self.asked[key] = asked
        if len(self.asked) > self.max_asked:  # age every count
            self.asked.clear()
            for entry in self.kept.values():
                entry[3] //= 2


searches, meetings = Answers(SEARCH_BYTES), Answers(MEETING_BYTES)
# And each meeting as a search shows it, but for its distance (api._results_shown), kept the same way:
# a search made afresh takes from here the results that other searches showed since.
results = Answers(RESULT_BYTES)


def minute_now() -> int:
    """Minutes since the epoch (UTC): the unit answers are kept in."""
    return int(time.time() // 60)


# And never longer than this: a change whose mark could not be written to Redis (it was unreachable)
# shows in every process within it.
MAX_KEPT_MINUTES = 5
class Held(NamedTuple):
    """What answers need of all meetings, as they were under ``stamp``."""

    stamp: tuple
    horizon: int  # the minute up to which ``turns`` were found
    turns: list[int]  # turning minutes (turning_minutes)
    scheduled_ids: list[int]  # meetings with a schedule (not simply weekly)


class Keeping(NamedTuple):
    """What KeptRoute read for a request whose answer it will keep (the request scope's ``KEEPING``)."""

    stamp: tuple
    minute: int
    answers: Answers


_held: Held | None = None
_held_lock = threading.Lock()


def _meetings_held(minute: int, stamp: tuple) -> Held:
    """Read in a worker thread: one query, once per change of the meetings and once a day."""
    global _held
    with _held_lock:
        held = _held
        if held is None or held.stamp != stamp or minute >= held.horizon:
            with runtime.reads() as session:
                rows = session.execute(select(Meeting.id, Meeting.weekly, Meeting.time, Meeting.end_time,
                                              Meeting.timezone, Meeting.exceptions)).all()
            # From an hour back: a request that read the clock just before another thread refreshed
            # this must still find the turns between its minute and that thread's.
            horizon, turns = turning_minutes([r for r in rows if r.time is not None], minute - 60)
            held = _held = Held(stamp, horizon, turns, [r.id for r in rows if not r.weekly])
    return held


def kept_until(minute: int, stamp: tuple) -> int:
    """The first minute after ``minute`` at which an answer made in ``minute`` may read differently
    (the module's docstring)."""
    held = _meetings_held(minute, stamp)
    i = bisect.bisect_right(held.turns, minute)
    return min(held.turns[i] if i < len(held.turns) else held.horizon, minute + MAX_KEPT_MINUTES)


def scheduled_ids(minute: int, stamp: tuple) -> list[int]:
    """The ids of the meetings with a schedule (not simply weekly), which every search asks for:
    held with the turning minutes, so a search made afresh saves that query."""
    return _meetings_held(minute, stamp).scheduled_ids


def turning_minutes(meetings, minute: int, days: int = 2) -> tuple[int, list[int]]:
    """(horizon, the minutes from ``minute`` to the horizon at which what an answer shows of time may
    turn) for meetings with (time, end_time, timezone, exceptions): each start, an hour before it, its
    end and an hour after it, each end time, and midnight, in the meeting's zone on every day up to
    ``days`` ahead, whatever the day it meets (more moments than there are, never fewer). The hours
    before and after are counted from the start itself, so they hold across a change of the clocks."""
    # Per zone: (start time, length) pairs, and wall-clock times (starts, end times, midnight).
    # "Today" of the soonest-first order turns at Britain's midnight, whatever the meetings.
    zones: dict[str, tuple[set, set]] = {SORT_ZONE.key: (set(), {"00:00"})}
    for meeting in meetings:
        starts, wall = zones.setdefault(meeting.timezone or SORT_ZONE.key, (set(), {"00:00"}))
        length = _minutes(length_of(meeting))
        times = [(meeting.time, meeting.end_time)]
        times += [(e.get("time") or meeting.time, e.get("end_time")) for e in exceptions_of(meeting).values()]
        for start_time, end_time in times:
            starts.add((start_time, length))
            wall.update(t for t in (start_time, end_time) if t)
    horizon = minute + days * 24 * 60
    now = dt.datetime.fromtimestamp(minute * 60, dt.UTC)
    found = set()
    for zone_name, (starts, wall) in zones.items():
        zone = ZoneInfo(zone_name)
        today = now.astimezone(zone).date()
        for day in (today + dt.timedelta(days=offset) for offset in range(-1, days + 2)):
            for hhmm in wall:
                found.update(_at(day, hhmm, zone))
            for start_time, length in starts:
                start = local_start(day, start_time, zone_name)
                found.update(start + dt.timedelta(minutes=d) for d in
                             (0, -_minutes(SOON), length, _minutes(USUAL_LENGTH)))
    turns = {int(at.timestamp() // 60) for at in found}
    return horizon, sorted(t for t in turns if minute < t <= horizon)


def _at(day: dt.date, hhmm: str, zone: ZoneInfo) -> tuple[dt.datetime, ...]:
    """Both instants a wall-clock time can name on a day the clocks go back (one otherwise)."""
    naive = dt.datetime.combine(day, parse_hhmm(hhmm))
    return naive.replace(tzinfo=zone), naive.replace(tzinfo=zone, fold=1)


def _minutes(delta: dt.timedelta) -> int:
    return int(delta.total_seconds() // 60)


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
    return (_local_changes, shared)


def current_stamp() -> tuple | None:
    """The stamp a request made now would read (``stamp``), outside a request; None if Redis cannot be
    read."""
    try:
        return (_local_changes, runtime.redis.get(version_key()))
    except redis.RedisError:
        return None


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
    try:  # a value never used before (a counter would start again after Redis lost its data)
        runtime.redis.set(version_key(), uuid.uuid4().hex)
    except redis.RedisError as exc:  # other processes see the change within MAX_KEPT_MINUTES
        log.warning("answers.version_not_bumped", error=type(exc).__name__)
