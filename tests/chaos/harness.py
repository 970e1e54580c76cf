"""The chaos suite's machinery: a private Redis that can be restarted, the stack with a log of
every process it ever ran, the referral stream, the reminder time machine, ground truth.

Ground truth is read from the services' own databases through their runtimes' engines (this
test process uses the same databases as the stack); the stack is only ever talked to over HTTP.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import re
import signal
import subprocess
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
import redis
from sqlalchemy import text

from tests.support import pii_scan
from tests.support.auth import auth
from tests.support.processes import ServiceProcess, wait_for
from tests.support.servers import start_redis_binary
from tests.support.stack import SERVICES, Stack

# --- a private Redis with AOF that can be restarted -----------------------------------------


class PrivateRedis:
    """A redis-server of our own (AOF on), so restarting it never disturbs anything else."""

    def __init__(self):
        self.url, self.proc, self.data = start_redis_binary(appendonly=True)
        self.port = int(self.url.rsplit(":", 1)[1].split("/")[0])

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5)

    def stop(self) -> None:
        """SIGTERM: Redis writes its AOF out and exits (a clean restart, as an ops team does it)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=20)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [self.proc.args[0], "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.data, "--save", "",
             "--appendonly", "yes", "--maxmemory-policy", "noeviction"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: _pings(self.url), timeout=20, what="redis to come back")

    def restart(self, down_seconds: float) -> None:
        self.stop()
        time.sleep(down_seconds)
        self.start()


def _pings(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


# --- the stack, remembering every process (for the log scan) ------------------------------------


class ChaosStack(Stack):
    def __init__(self, env: dict[str, str]):
        super().__init__(env)
        self.every: list[ServiceProcess] = []

    def _spec(self, name: str) -> ServiceProcess:
        proc = super()._spec(name)
        self.every.append(proc)
        return proc

    def start_all(self, names: tuple[str, ...] | None = None) -> ChaosStack:
        """Start processes in parallel (start-up is mostly imports: two cores do it twice as fast)."""
        names = names or self.NAMES
        with ThreadPoolExecutor(len(names)) as pool:
            started = list(pool.map(lambda n: self._spec(n).start(timeout=120), names))
        self.processes.update(zip(names, started, strict=True))
        for service in SERVICES:
            if f"{service}-api" in names:
                wait_for(lambda s=service: _ready(self.urls[s]), timeout=60, what=f"{service} API ready")
        return self

    def kill(self, name: str) -> None:
        self.processes[name].kill()

    def restart_with(self, name: str, env: dict[str, str]) -> None:
        """Restart one process with some settings changed (e.g. a scheduler without its outbox sweep)."""
        usual = self.env
        self.env = {**usual, **env}
        try:
            self.restart(name)
        finally:
            self.env = usual

    def restart_all(self, names: list[str]) -> None:
        if not names:
            return
        with ThreadPoolExecutor(len(names)) as pool:
            list(pool.map(self.restart, names))
        for service in SERVICES:
            if f"{service}-api" in names:
                wait_for(lambda s=service: _ready(self.urls[s]), timeout=60, what=f"{service} API ready")

    def all_logs(self) -> list[tuple[str, str]]:
        return [(p.name, p.log()) for p in self.every]


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def kill_random_worker(stack: ChaosStack, service: str, rng: random.Random) -> str:
    """kill -9 one of the service's worker processes: the whole worker, or one pool child."""
    names = ["notifications-worker", "notifications-sender"] if service == "notifications" else [f"{service}-worker"]
    name = rng.choice(names)
    proc = stack.processes[name]
    children = proc.children()
    if children and rng.random() < 0.5:
        os.kill(rng.choice(children), signal.SIGKILL)  # the pool process dies mid-task; its parent forks a new one
        return f"{name} pool child"
    proc.kill()
    return name


# --- referrals: meetings, the stream --------------------------------------------------------


def mobile(i: int) -> str:
    """Distinct valid UK mobiles. (Ofcom's drama range 07700 900xxx is refused as invalid by
    phonenumbers, and so by the referral desk.) Nothing is ever sent to them: the dev provider
    only records messages."""
    return f"07700 {100000 + i:06d}"


def e164(i: int) -> str:
    return f"+447700{100000 + i:06d}"


@dataclass
class Attempt:
    i: int
    reference: str
    phase: str
    outcome: str = "pending"  # created, ambiguous, refused:<code>, failed
    seconds: float = 0.0
    retries: int = 0


@dataclass
class Stream:
    """A steady stream of referrals with consent and a distinct mobile, paced over time."""

    url: str
    meetings: list[dict]
    total: int
    rate: float
    phase: str = "baseline"
    attempts: list[Attempt] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    stopped: threading.Event = field(default_factory=threading.Event)
    # How many may be posted so far: raised phase by phase, so every fault phase gets its share
    # however long the previous ones took on a busy machine.
    allowed: int = 0

    def start(self) -> Stream:
        threading.Thread(target=self._run, daemon=True, name="referral-stream").start()
        return self

    def _run(self) -> None:
        next_at = time.monotonic()
        with ThreadPoolExecutor(6) as pool:
            for i in range(self.total):
                while i >= self.allowed and not self.stopped.is_set():
                    time.sleep(0.05)
                    next_at = time.monotonic()
                if self.stopped.is_set():
                    break
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                next_at += 1 / self.rate
                attempt = Attempt(i=i, reference=f"CH-{i:05d}", phase=self.phase)
                self.attempts.append(attempt)
                pool.submit(self._post, attempt)
        self.done.set()

    def stop(self) -> None:
        """Stop sending (a failed run must not leave threads posting to a dead stack)."""
        self.stopped.set()

    def _post(self, attempt: Attempt) -> None:
        meeting = self.meetings[attempt.i % len(self.meetings)]
        body = {"meeting_slug": meeting["slug"], "client_reference": attempt.reference, "support": "none",
                "mobile": mobile(attempt.i), "consent": {"to_reminders": True, "wording_version": "2025-01"}}
        headers = auth("keyworker", meeting["site_id"])
        t0 = time.monotonic()
        deadline = t0 + 120
        with httpx.Client(timeout=30) as client:
            while True:
                try:
                    response = client.post(f"{self.url}/referrals", json=body, headers=headers)
                except (httpx.ConnectError, httpx.ConnectTimeout):
                    # The request never reached the API (it is down): safe to send again.
                    if time.monotonic() > deadline or self.stopped.is_set():
                        attempt.outcome = "failed"
                        break
                    attempt.retries += 1
                    time.sleep(0.5)
                    continue
                except httpx.HTTPError:
                    attempt.outcome = "ambiguous"  # sent, no answer: the API died mid-request
                    break
                attempt.outcome = "created" if response.status_code == 201 else f"refused:{response.status_code}"
                break
        attempt.seconds = time.monotonic() - t0


# --- the time machine -----------------------------------------------------------------------

# A follow-up goes only once its meeting has ended (the send-time clock check): pulling one
# forward moves its meeting back by as much, as if the meeting had happened.
PULL_DUE = text("""
    UPDATE reminders r SET due_at = now(),
        meeting_start = CASE WHEN r.kind = 'follow_up' THEN r.meeting_start - (o.old_due - now()) ELSE r.meeting_start END,
        meeting_end = CASE WHEN r.kind = 'follow_up' THEN r.meeting_end - (o.old_due - now()) ELSE r.meeting_end END
    FROM (SELECT id, due_at AS old_due FROM reminders
          WHERE status = 'created' AND due_at > now() FOR UPDATE SKIP LOCKED) o
    WHERE r.id = o.id
    RETURNING r.id, o.old_due
""")


class TimeMachine:
    """Makes planned reminders due now (remembering when they were planned for), so the
    dispatcher and the sender run during the faults instead of days later. (It moves due
    times, not the wall clock: the stack runs without quiet hours, or a run at night would
    hold everything until 08:00; the clock rules have their own tests.)"""

    def __init__(self, engine):
        self.engine = engine
        self.planned_due: dict = {}
        self._stop = threading.Event()

    def pull(self) -> int:
        with self.engine.begin() as conn:
            rows = conn.execute(PULL_DUE).all()
        for reminder_id, old_due in rows:
            self.planned_due.setdefault(reminder_id, old_due)
        return len(rows)

    def run_every(self, seconds: float) -> TimeMachine:
        def loop():
            while not self._stop.wait(seconds):
                try:
                    self.pull()
                except Exception:  # noqa: BLE001 (the database is never a fault target; retry next tick)
                    pass

        threading.Thread(target=loop, daemon=True, name="time-machine").start()
        return self

    def stop(self) -> None:
        self._stop.set()


# --- ground truth ---------------------------------------------------------------------------


def scalar(engine, sql: str, **params):
    with engine.connect() as conn:
        return conn.execute(text(sql), params).scalar()


def rows(engine, sql: str, **params):
    with engine.connect() as conn:
        return conn.execute(text(sql), params).all()


def unrelayed(engine, older_than_seconds: float = 0) -> int:
    return scalar(engine, "SELECT count(*) FROM outbox WHERE relayed_at IS NULL "
                          "AND created_at <= now() - make_interval(secs => :s)", s=older_than_seconds)


def unconsumed(engines: dict) -> dict[tuple[str, str], int]:
    """Events in each producer's outbox that their subscriber's inbox does not hold."""
    inboxes = {name: {r[0] for r in rows(engine, "SELECT event_id FROM inbox")} for name, engine in engines.items()}
    missing: Counter = Counter()
    for producer, engine in engines.items():
        for event_id, subscriber in rows(engine, "SELECT event_id, subscriber FROM outbox"):
            if event_id not in inboxes[subscriber]:
                missing[(producer, subscriber)] += 1
    return dict(missing)


def assert_every_event_delivered_once(engines: dict) -> None:
    """Every event relayed, each inbox holding exactly the events addressed to it, none missing."""
    for name, engine in engines.items():
        assert unrelayed(engine) == 0, f"{name} has events never relayed"
        inbox = scalar(engine, "SELECT count(*) FROM inbox")
        addressed = sum(scalar(e, "SELECT count(DISTINCT event_id) FROM outbox WHERE subscriber = :s", s=name)
                        for e in engines.values())
        assert inbox == addressed, f"{name}: {inbox} events in the inbox, {addressed} addressed to it"
    missing = unconsumed(engines)
    assert missing == {}, f"events their subscriber's inbox does not hold (producer, subscriber): {missing}"


def unconsumed_details(engines: dict, limit: int = 10) -> list[str]:
    """The events behind ``unconsumed``: type, when written and when relayed (to place the loss)."""
    inboxes = {name: {r[0] for r in rows(engine, "SELECT event_id FROM inbox")} for name, engine in engines.items()}
    out = []
    for producer, engine in engines.items():
        for r in rows(engine, "SELECT event_id, subscriber, event_type, created_at, relayed_at, attempts FROM outbox"):
            if r.event_id not in inboxes[r.subscriber]:
                out.append(f"{producer}->{r.subscriber} {r.event_type} {r.event_id} written {r.created_at:%H:%M:%S.%f} "
                           f"relayed {r.relayed_at and f'{r.relayed_at:%H:%M:%S.%f}'} attempts {r.attempts}")
    return out[:limit]


def where_in_redis(client: redis.Redis, prefix: str, needles: list[str]) -> dict:
    """Every key under ``prefix`` (type, size), and which keys hold a message naming a needle
    (message bodies are base64-decoded): where a lost event sits, if Redis still has it."""
    import base64
    import json

    keys, holders = {}, defaultdict(list)
    for key in client.scan_iter(match=f"{prefix}*", count=500):
        name, kind = key.decode(errors="replace"), client.type(key).decode()
        values = {"list": lambda k: client.lrange(k, 0, -1), "hash": lambda k: list(client.hgetall(k).values()),
                  "zset": lambda k: client.zrange(k, 0, -1), "set": lambda k: list(client.smembers(k))}.get(
            kind, lambda k: [])(key)
        keys[name] = f"{kind}:{len(values)}"
        for raw in values:
            blob = raw.decode(errors="replace")
            try:
                message = json.loads(blob)
                message = message[0] if isinstance(message, list) else message  # unacked: [message, exchange, key]
                blob += base64.b64decode(message["body"]).decode(errors="replace")
            except (ValueError, KeyError, TypeError, IndexError):
                pass
            holders.update({n: holders[n] + [name] for n in needles if n in blob})
    return {"keys": keys, "holders": dict(holders)}


def counter_drift(directory_engine, referrals_engine, notifications_engine) -> dict:
    """Directory counters minus the true counts, per (site, fellowship, metric); empty = equal."""
    shown: Counter = Counter()
    for site, fellowship, metric, count in rows(directory_engine, "SELECT site_id, fellowship, metric, sum(count) "
                                                                  "FROM engagement_counts GROUP BY 1, 2, 3"):
        shown[(site, fellowship, metric)] = int(count)
    truth: Counter = Counter()
    for site, fellowship, count in rows(referrals_engine, "SELECT site_id, fellowship, count(*) FROM referrals "
                                                          "GROUP BY 1, 2"):
        truth[(site, fellowship, "referrals_made")] = count
    for site, fellowship, count in rows(notifications_engine, "SELECT site_id, fellowship, count(*) FROM reminders "
                                                              "WHERE sent_at IS NOT NULL GROUP BY 1, 2"):
        truth[(site, fellowship, "reminders_sent")] = count
    keys = set(shown) | set(truth)
    return {k: shown[k] - truth[k] for k in keys if shown[k] != truth[k]}


# --- personal data: a fast scan for many numbers ------------------------------------------------

DIGIT_RUNS = re.compile(r"\d[\d ]{8,}\d")


class PhoneScanner:
    """Finds any of many phone numbers, in any clear form pii_scan.variants lists, in text.

    Looking for thousands of needles in every row one by one is slow; instead every run of
    digits in the text is cut into windows and looked up in the set of forms."""

    def __init__(self, numbers: list[str]):
        self.forms = set().union(*(pii_scan.variants(n) for n in numbers))
        self.lengths = sorted({len(f) for f in self.forms if f[0].isdigit()})

    def find(self, content: str) -> set[str]:
        """The forms found whole: not the inside of a longer number (a task's run time in seconds,
        0.0207770010001695, holds 7700100016)."""
        found = set()
        for run in DIGIT_RUNS.findall(content):
            for length in self.lengths:
                for start in range(0, len(run) - length + 1):
                    end = start + length
                    window = run[start:end]
                    if window in self.forms and (start == 0 or run[start - 1] == " ") and \
                            (end == len(run) or run[end] == " "):
                        found.add(window)
        found |= {f for f in self.forms if f.startswith("+") and f in content}
        return found

    def scan_database(self, engine) -> list[str]:
        hits = []
        with engine.connect() as conn:
            tables = [r[0] for r in conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'"))]
            for table in tables:
                for row in conn.execute(text(f'SELECT * FROM "{table}"')):
                    hits += [f"{engine.url.database}.{table}: {n}" for n in self.find(" ".join(str(v) for v in row))]
        return hits

    def scan_redis(self, client: redis.Redis, prefix: str) -> list[str]:
        hits = []
        for key in client.scan_iter(match=f"{prefix}*", count=500):
            kind = client.type(key).decode()
            values = {"string": lambda k: [client.get(k)], "list": lambda k: client.lrange(k, 0, -1),
                      "hash": lambda k: list(client.hgetall(k).values()), "set": lambda k: list(client.smembers(k)),
                      "zset": lambda k: client.zrange(k, 0, -1)}.get(kind, lambda k: [])(key)
            blob = " ".join(v.decode(errors="replace") if isinstance(v, bytes) else str(v) for v in values)
            hits += [f"redis {key!r}: {n}" for n in self.find(blob + " " + key.decode(errors="replace"))]
        return hits


def phase_table(phases: list[str], attempts: list[Attempt], per_referral: dict, notes: dict) -> tuple[str, dict]:
    """Lost and duplicated counts per fault phase, as a printable table and as numbers."""
    columns = ("posted", "201", "ambiguous", "lost", "dup", "reminders", "missing", "extra", "sent", "sent twice",
               "unsent")
    totals: dict[str, Counter] = defaultdict(Counter)
    for a in attempts:
        t = totals[a.phase]
        t["posted"] += 1
        t["201"] += a.outcome == "created"
        t["ambiguous"] += a.outcome == "ambiguous"
        info = per_referral.get(a.reference)
        in_db = 0 if info is None else info["rows"]
        t["lost"] += a.outcome == "created" and in_db == 0
        t["dup"] += max(in_db - 1, 0)
        if info:
            for key in ("reminders", "missing", "extra", "sent", "sent twice", "unsent"):
                t[key] += info[key]
    width = max(len(p) for p in phases) + 2
    lines = ["phase".ljust(width) + "".join(c.rjust(11) for c in columns) + "   notes"]
    for p in phases:
        lines.append(p.ljust(width) + "".join(str(totals[p][c]).rjust(11) for c in columns) + "   " + notes.get(p, ""))
    return "\n".join(lines), totals


def publish_meetings(stack: Stack, engines: dict, meetings: list[dict]) -> None:
    """Create the meetings through the directory API (admin) and wait until both replicas hold them."""
    for meeting in meetings:
        response = httpx.post(f"{stack.urls['directory']}/meetings", json=meeting, headers=auth("admin"), timeout=30)
        assert response.status_code == 201, response.text
    for name in ("referrals", "notifications"):
        wait_for(lambda n=name: scalar(engines[n], "SELECT count(*) FROM meeting_replica") == len(meetings),
                 timeout=120, what=f"the {name} replica to hold the meetings")


def expected_plan(slug: str, planned_date: dt.date, created_at: dt.datetime) -> dict[str, dt.datetime]:
    """When notifications should have planned each reminder of a referral made at ``created_at``."""
    from services.notifications import service as notifications_service
    from services.notifications.models import meeting_replica
    from services.notifications.runtime import runtime as notifications
    from shared.replica import get_meeting

    with notifications.sessions() as session:
        meeting = get_meeting(session, meeting_replica, slug)
    return notifications_service.plan_times(meeting=meeting, planned_date=planned_date, now=created_at,
                                            cfg=notifications.settings)


def outstanding(stream: Stream, machine: TimeMachine, engines: dict) -> dict:
    """What is still on its way (all zero / empty once the system has settled)."""
    machine.pull()
    return {
        "posts pending": sum(a.outcome == "pending" for a in stream.attempts) + (not stream.done.is_set()),
        "referrals not planned": scalar(engines["referrals"], "SELECT count(*) FROM referrals")
        - scalar(engines["notifications"], "SELECT count(*) FROM referral_contacts WHERE planned"),
        "reminders not done": dict(rows(engines["notifications"], "SELECT status, count(*) FROM reminders "
                                   "WHERE status IN ('created', 'queued', 'sending') GROUP BY 1")),
        "unrelayed": {name: unrelayed(e) for name, e in engines.items() if unrelayed(e)},
        "unconsumed": unconsumed(engines),
    }


def per_referral_truth(referrals_engine, notifications_engine, planned_due: dict, expected_plan) -> dict:
    """For each client reference: rows in referrals, reminders planned vs expected, sends."""
    sends = Counter({ref: n for ref, n in rows(notifications_engine,
                                               "SELECT reference, count(*) FROM dev_messages GROUP BY 1")})
    reminders = defaultdict(list)
    for r in rows(notifications_engine, "SELECT id, referral_id, kind, status, due_at, sent_at FROM reminders"):
        reminders[r.referral_id].append(r)
    out: dict = {}
    for ref in rows(referrals_engine, "SELECT id, client_reference, meeting_slug, planned_date, created_at "
                                      "FROM referrals"):
        info = out.setdefault(ref.client_reference, Counter())
        info["rows"] += 1
        expected = expected_plan(ref.meeting_slug, ref.planned_date, ref.created_at)
        got = reminders.get(ref.id, [])
        kinds = Counter(r.kind for r in got)
        info["reminders"] += len(got)
        info["missing"] += sum(1 for k in expected if kinds[k] == 0)
        info["extra"] += sum(n for k, n in kinds.items() if k not in expected) + sum(n - 1 for n in kinds.values() if n > 1)
        for r in got:
            planned_for = planned_due.get(r.id, r.due_at)
            if r.kind in expected and abs((planned_for - expected[r.kind]).total_seconds()) > 1:
                info["extra"] += 1  # planned at the wrong time counts as wrong
            n = sends[str(r.id)]
            info["sent"] += n >= 1
            info["sent twice"] += max(n - 1, 0)
            info["unsent"] += n == 0
            info["status not sent"] += r.status != "sent"
    return out


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
