"""What the end-to-end benchmarks share: private databases and Redis key space, the whole stack as
real processes, synthetic data at a chosen size, the measured workloads and peak memory.

Postgres: TEST_POSTGRES_URL or postgresql://postgres@127.0.0.1:5432/postgres (three databases
are created and dropped). Redis: TEST_REDIS_URL / REDIS_URL or redis://127.0.0.1:6379/0, under
a private key prefix deleted afterwards. Everything is on loopback.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psycopg  # noqa: E402
import redis  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

RUN = uuid.uuid4().hex[:8]
ADMIN = (os.environ.get("TEST_POSTGRES_URL") or "postgresql://postgres@127.0.0.1:5432/postgres").replace(
    "postgresql+psycopg://", "postgresql://")
REDIS_URL = os.environ.get("TEST_REDIS_URL") or os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
PREFIX = f"fama-bench-{RUN}:"
SERVICES = ("directory", "referrals", "notifications")
CONCURRENCY = 8
# The data set at "1x"; 0.1x and 10x scale every number.
BASE = {"meetings": 300, "referrals": 2000, "reminders": 6000}
SITES = ("croydon", "sheffield", "birmingham", "norwich", "gateshead", "solihull")
FELLOWSHIPS = ("aa", "na", "ca", "smart", "al-anon")
console = Console(width=200)
# The production command's options (README, "Serving the APIs"): every bench serves the APIs with them.
SERVE = ("--loop", "uvloop", "--http", "httptools", "--no-access-log")
# And the image's environment (Dockerfile) for every process a bench starts.
os.environ.setdefault("MALLOC_ARENA_MAX", "2")


def setup() -> None:
    """Fresh databases and environment; must run before any service module is imported."""
    base = ADMIN.rpartition("/")[0].replace("postgresql://", "postgresql+psycopg://", 1)
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        for service in SERVICES:
            conn.execute(f'CREATE DATABASE "fama_bench_{RUN}_{service}"')
            os.environ[f"{service.upper()}_DATABASE_URL"] = f"{base}/fama_bench_{RUN}_{service}"
    os.environ.update({"REDIS_URL": REDIS_URL, "REDIS_KEY_PREFIX": PREFIX, "FAMA_ENV": "test", "LOG_LEVEL": "INFO",
                       "OUTBOX_SWEEP_SECONDS": "1", "NOTIFICATIONS_RATE_LIMIT_PER_MINUTE": "0",
                       # One loopback client would hit the per-address limit at once; keep the limiter
                       # (its Redis round trip is part of a search) but far above the load.
                       "PUBLIC_RATE_LIMIT_PER_MINUTE": "1000000000"})
    for service in SERVICES:
        runtime(service).migrate()


def teardown() -> None:
    for service in SERVICES:
        try:
            runtime(service).reset_caches()
        except Exception:  # noqa: BLE001
            pass
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(match=f"{PREFIX}*", count=1000):
        client.delete(key)
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        for service in SERVICES:
            conn.execute(f'DROP DATABASE IF EXISTS "fama_bench_{RUN}_{service}" WITH (FORCE)')


def runtime(service: str):
    import importlib

    return importlib.import_module(f"services.{service}.runtime").runtime


def sql(service: str, statement: str, **params):
    from sqlalchemy import text

    with runtime(service).engine.begin() as conn:
        result = conn.execute(text(statement), params)
        return result.all() if result.returns_rows else None


# --- the stack and its memory -----------------------------------------------------------------


def start_stack():
    from tests.support.stack import Stack

    stack = Stack(serve=SERVE)
    names = stack.NAMES

    def start(name):
        stack.processes[name] = stack._spec(name)
        stack.processes[name].start(timeout=120)

    try:
        with ThreadPoolExecutor(len(names)) as pool:
            list(pool.map(start, names))
    except Exception:
        stack.stop()
        raise
    for service in SERVICES:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{stack.urls[service]}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{service} API not ready")
            time.sleep(0.2)
    return stack


def rss_kb(pid: int) -> int:
    """Resident memory of a process and all its descendants (a prefork worker and its pool)."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except (FileNotFoundError, ProcessLookupError, StopIteration):
            continue
    return total


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and all its descendants (a prefork worker and its pool):
    what the work cost, which hardly depends on what else the machine runs (its wall time does)."""
    ticks, total, todo = os.sysconf("SC_CLK_TCK"), 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo += [int(c) for c in f.read().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def deliveries() -> int:
    """Event deliveries so far (inbox rows of referral and reminder events, every service)."""
    return sum(sql(s, "SELECT count(*) FROM inbox WHERE event_type LIKE 'referral.%' OR event_type LIKE 'reminder.%'")[0][0]
               for s in SERVICES)


def rss_kb_one(pid: int) -> int:
    """Resident memory of one process alone (0 once it has gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    except (FileNotFoundError, ProcessLookupError, StopIteration):
        return 0


def descendants(pid: int) -> list[int]:
    """A process's children, theirs, and so on (a prefork worker's pool, uvicorn's workers)."""
    found, todo = [], [pid]
    while todo:
        try:
            with open(f"/proc/{todo[0]}/task/{todo[0]}/children") as f:
                kids = [int(c) for c in f.read().split()]
        except FileNotFoundError:
            kids = []
        found += kids
        todo = todo[1:] + kids
    return found


class PeakMemory:
    """Samples every stack process's RSS twice a second: the peak of the whole tree (children
    included) and of the largest single process in it (the 150 MB a process target)."""

    def __init__(self, stack):
        self.stack, self.peaks, self.largest, self._stop = stack, {}, {}, threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            for name, proc in self.stack.processes.items():
                each = [rss_kb_one(pid) for pid in (proc.pid, *descendants(proc.pid))]
                self.peaks[name] = max(self.peaks.get(name, 0), sum(each))
                self.largest[name] = max(self.largest.get(name, 0), max(each))

    def stop(self) -> dict[str, int]:
        self._stop.set()
        return self.peaks

    def table(self, title: str) -> Table:
        t = Table("process", "peak RSS (MiB, with children)", "peak RSS of its largest process (MiB)", title=title)
        for name, kb in sorted(self.peaks.items()):
            t.add_row(name, f"{kb / 1024:.0f}", f"{self.largest.get(name, 0) / 1024:.0f}")
        return t


# --- data at a size -----------------------------------------------------------------------------


def sizes(factor: float) -> dict[str, int]:
    return {k: max(1, int(v * factor)) for k, v in BASE.items()}


def clear_data() -> None:
    for service in SERVICES:
        rt = runtime(service)
        tables = ", ".join(t.name for t in rt.metadata.sorted_tables)
        sql(service, f"TRUNCATE {tables} RESTART IDENTITY CASCADE")


def load_data(factor: float, seed: int = 7) -> dict[str, int]:
    """Meetings (in the directory and both replicas), past referrals and their future reminders.

    Written straight into the databases: the benchmarks measure what happens on top of data of
    this size, not how fast it was made. Meetings spread around London, every day of the week.
    """
    from services.directory.models import Meeting
    from services.directory.service import grid_cell
    from services.notifications.models import ReferralContact, Reminder
    from services.notifications.models import meeting_replica as n_replica
    from services.referrals.models import Referral
    from services.referrals.models import meeting_replica as r_replica
    from shared.events import MeetingSnapshot

    rng = random.Random(seed)
    n = sizes(factor)
    now = dt.datetime.now(dt.UTC)
    meetings, snapshots = [], []
    for i in range(n["meetings"]):
        lat, lng = 51.5 + rng.uniform(-0.25, 0.25), -0.1 + rng.uniform(-0.4, 0.4)
        fellowship, day, hhmm = FELLOWSHIPS[i % 5], i % 7, f"{10 + i % 10}:{(i * 15) % 60:02d}"
        slug, site = f"bench-meeting-{i}", SITES[i % len(SITES)]
        meetings.append({"slug": slug, "name": f"Bench meeting {i}", "fellowship": fellowship, "day": day, "time": hhmm,
                         "timezone": "Europe/London", "types": ["O"], "types_key": "|O|", "unknown_types": [],
                         "attendance_option": "in_person", "latitude": lat, "longitude": lng, "cell": grid_cell(lat, lng),
                         "approximate": False, "booking_required": False, "peer_led": False, "partnership": False,
                         "active": True, "site_id": site, "location": "Hall", "created_at": now, "updated": now})
        snap = MeetingSnapshot(slug=slug, name=f"Bench meeting {i}", fellowship=fellowship, day=day, time=hhmm,
                               latitude=lat, longitude=lng, site_id=site, location="Hall")
        snapshots.append({"slug": slug, "fellowship": fellowship, "active": True,
                          "snapshot": snap.model_dump(mode="json"), "event_at": now})
    with runtime("directory").engine.begin() as conn:
        conn.execute(Meeting.__table__.insert(), meetings)
    for service, table in (("referrals", r_replica), ("notifications", n_replica)):
        with runtime(service).engine.begin() as conn:
            conn.execute(table.insert(), snapshots)
    referrals, contacts, reminders = [], [], []
    kinds = ("day_before", "hours_before", "follow_up")
    for i in range(n["referrals"]):
        rid, m = uuid.uuid4(), meetings[i % len(meetings)]
        planned = (now + dt.timedelta(days=1 + i % 7)).date()
        referrals.append({"id": rid, "site_id": m["site_id"], "meeting_slug": m["slug"], "fellowship": m["fellowship"],
                          "planned_date": planned, "support": "none", "client_reference": f"BN-{i:06d}",
                          "status": "requested", "business_status": "information-given", "created_by": "bench",
                          "created_at": now, "updated_at": now, "reminder_detail": "discreet",
                          "consent_to_reminders": True})
        contacts.append({"referral_id": rid, "site_id": m["site_id"], "fellowship": m["fellowship"],
                         "meeting_slug": m["slug"], "planned_date": planned, "detail": "discreet", "channel": "sms",
                         "contact_hash": f"bench-{i}", "active": True, "planned": True, "created_at": now,
                         "updated_at": now})
    per_referral = max(1, n["reminders"] // n["referrals"])
    for i, c in enumerate(contacts):
        for k in range(per_referral):
            start = now + dt.timedelta(days=1 + i % 7)
            reminders.append({"id": uuid.uuid4(), "referral_id": c["referral_id"], "site_id": c["site_id"],
                              "fellowship": c["fellowship"], "meeting_slug": c["meeting_slug"], "kind": kinds[k % 3],
                              "channel": "sms", "contact_hash": c["contact_hash"], "meeting_start": start,
                              "due_at": start - dt.timedelta(hours=2 + k), "status": "created", "attempts": 0,
                              "in_doubt": False, "created_at": now, "updated_at": now})
    with runtime("referrals").engine.begin() as conn:
        conn.execute(Referral.__table__.insert(), referrals)
    with runtime("notifications").engine.begin() as conn:
        conn.execute(ReferralContact.__table__.insert(), contacts)
        conn.execute(Reminder.__table__.insert(), reminders)
    for service in SERVICES:
        sql(service, "ANALYZE")
    return {"meetings": len(meetings), "referrals": len(referrals), "reminders": len(reminders)}


# --- workloads ----------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


def closed_loop(requests: list, send, concurrency: int = CONCURRENCY, seconds: float | None = None) -> dict:
    """Each of ``concurrency`` threads sends one request after another (its own httpx client).

    ``send(client, request)`` returns the status code. Stops at the end of ``requests`` or after
    ``seconds``. Returns rate, latency percentiles (ms), statuses and the start time of each call."""
    lock, it = threading.Lock(), iter(requests)
    latencies, statuses, starts = [], {}, {}
    deadline = None if seconds is None else time.monotonic() + seconds

    def worker():
        with httpx.Client(timeout=60) as client:
            while True:
                with lock:
                    request = next(it, None)
                if request is None or (deadline is not None and time.monotonic() > deadline):
                    return
                t0, wall = time.perf_counter(), time.time()
                code = send(client, request)
                elapsed = time.perf_counter() - t0
                with lock:
                    latencies.append(elapsed)
                    statuses[code] = statuses.get(code, 0) + 1
                    starts[id(request)] = wall

    began = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.perf_counter() - began
    return {"count": len(latencies), "rate": len(latencies) / took, "p50": percentile(latencies, 50) * 1000,
            "p95": percentile(latencies, 95) * 1000, "statuses": statuses, "starts": starts, "seconds": took}


def open_loop(requests: list, send, rate: float, concurrency: int = 32) -> dict:
    """Send request i at i / ``rate`` seconds from the start (threads with one httpx client each)."""
    import queue

    todo: queue.Queue = queue.Queue()
    lock, latencies, statuses, starts = threading.Lock(), [], {}, {}

    def worker():
        with httpx.Client(timeout=60) as client:
            while (request := todo.get()) is not None:
                t0, wall = time.perf_counter(), time.time()
                code = send(client, request)
                with lock:
                    latencies.append(time.perf_counter() - t0)
                    statuses[code] = statuses.get(code, 0) + 1
                    starts[id(request)] = wall

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    began = time.perf_counter()
    for i, request in enumerate(requests):
        time.sleep(max(0.0, began + i / rate - time.perf_counter()))
        todo.put(request)
    for _ in threads:
        todo.put(None)
    for t in threads:
        t.join()
    took = time.perf_counter() - began
    return {"count": len(latencies), "rate": len(latencies) / took, "p50": percentile(latencies, 50) * 1000,
            "p95": percentile(latencies, 95) * 1000, "statuses": statuses, "starts": starts, "seconds": took}


def search(stack, seconds: float = 10.0) -> dict:
    """Public meeting search near an outward code, with and without a day filter."""
    queries = [{"near": pc, "radius_km": 10, "limit": 20, **({"day": d} if d is not None else {})}
               for pc in ("CR0", "SE1", "N1", "W2", "E1", "SW9") for d in (None, 1, 3, 5)] * 10_000
    url = f"{stack.urls['directory']}/meetings"
    return closed_loop(queries, lambda c, q: c.get(url, params=q).status_code, seconds=seconds)


def create_referrals(stack, count: int, factor_label: str = "", rate: float | None = None) -> dict:
    """POST ``count`` referrals (consent and a distinct mobile) to meetings of the loaded set.

    As fast as 8 clients go, or with ``rate``, at that steady rate (referral i is sent at i / rate
    seconds, whatever the answers before it: an open loop, as keyworkers do not wait for each other)."""
    from tests.support.auth import auth

    slugs = [r[0] for r in sql("referrals", "SELECT slug FROM meeting_replica ORDER BY slug")]
    site_of = dict(sql("directory", "SELECT slug, site_id FROM meetings"))
    headers = {s: auth("keyworker", s) for s in SITES}
    url = f"{stack.urls['referrals']}/referrals"
    tag = "".join(random.choice("ABCDEFGHJK") for _ in range(3))
    bodies = []
    for i in range(count):
        slug = slugs[i % len(slugs)]
        bodies.append({"meeting_slug": slug, "client_reference": f"B{tag}-{i:05d}", "support": "none",
                       "mobile": f"07911 {100000 + i:06d}", "consent": {"to_reminders": True, "wording_version": "2025-01"},
                       "_site": site_of[slug]})

    def send(client, body):
        payload = {k: v for k, v in body.items() if k != "_site"}
        response = client.post(url, json=payload, headers=headers[body["_site"]])
        if response.status_code != 201 and not errors:
            errors.append(response.text[:300])
        return response.status_code

    errors: list[str] = []
    result = closed_loop(bodies, send) if rate is None else open_loop(bodies, send, rate)
    if result["statuses"].get(201, 0) < count:
        raise RuntimeError(f"referrals refused: {result['statuses']}; first: {errors[:1]}")
    result["references"] = {b["client_reference"]: result["starts"].get(id(b)) for b in bodies}
    return result


def pipeline_completion(created: dict, timeout: float = 240.0) -> dict:
    """Wait until notifications planned and directory counted every created referral; latencies
    from each POST to the later of the two handlers (their inbox rows' processed_at)."""
    refs = created["references"]
    deadline = time.monotonic() + timeout
    while True:
        rows = sql("referrals", """
            SELECT r.client_reference, o.event_id FROM referrals r
            JOIN outbox o ON o.event_type = 'referral.created' AND o.subscriber = 'notifications'
                         AND (o.body -> 'payload' ->> 'referral_id') = r.id::text
            WHERE r.client_reference = ANY(:refs)""", refs=list(refs))
        events = {str(e): ref for ref, e in rows}
        done = {}
        for service in ("notifications", "directory"):
            for event_id, at in sql(service, "SELECT event_id::text, processed_at FROM inbox "
                                             "WHERE event_type = 'referral.created'"):
                if event_id in events:
                    ref = events[event_id]
                    done.setdefault(ref, []).append(at.timestamp())
        finished = {ref: max(ts) for ref, ts in done.items() if len(ts) == 2}
        if len(finished) >= len(rows) and len(rows) == created["statuses"].get(201, 0):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"pipeline did not finish: {len(finished)} of {len(rows)}")
        time.sleep(0.5)
    latencies = [finished[ref] - refs[ref] for ref in finished]
    first, last = min(refs[ref] for ref in finished), max(finished.values())
    planned = sql("notifications", "SELECT count(*) FROM reminders r JOIN referral_contacts c USING (referral_id) "
                                   "WHERE c.contact_hash NOT LIKE 'bench-%'")[0][0]
    return {"count": len(finished), "rate": len(finished) / (last - first), "p50": percentile(latencies, 50),
            "p95": percentile(latencies, 95), "seconds": last - first, "reminders": planned}


def noop_rate(count: int = 2000) -> dict:
    """A service-like worker (prefork, one process, late acks) draining ``count`` no-op tasks
    over the same Redis: the ceiling one event worker could reach doing nothing."""
    rt = runtime("notifications")
    queue = "bench.noop"
    client = redis.Redis.from_url(REDIS_URL)
    args = [sys.executable, "-m", "celery", "-A", "bench.notifications_worker", "worker", "-Q", queue, "-c", "1",
            "-P", "prefork", "-n", f"noop-{RUN}@%h", "--without-gossip", "--without-mingle", "--loglevel", "WARNING"]
    log = open(f"/tmp/fama-bench-{RUN}-noop.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(args, cwd=ROOT, env=dict(os.environ), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)

    def drained() -> bool:
        return not client.llen(f"{PREFIX}{queue}") and not client.hlen(f"{PREFIX}unacked")

    try:
        rt.celery.send_task("notifications.noop", queue=queue)
        deadline = time.monotonic() + 60
        while not drained():
            if time.monotonic() > deadline:
                raise RuntimeError("no-op worker did not start")
            time.sleep(0.1)
        started, cpu = time.perf_counter(), tree_cpu_seconds(proc.pid)
        with rt.celery.producer_or_acquire() as producer:
            for _ in range(count):
                rt.celery.send_task("notifications.noop", queue=queue, producer=producer)
        while not drained():
            time.sleep(0.02)
        took = time.perf_counter() - started
        return {"count": count, "rate": count / took, "seconds": took,
                "cpu_ms": (tree_cpu_seconds(proc.pid) - cpu) * 1000 / count}
    finally:
        import signal

        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def events_per_referral() -> float:
    """Event deliveries (inbox rows) per referral posted in the run: the work behind one referral."""
    total = sum(sql(s, "SELECT count(*) FROM inbox WHERE event_type LIKE 'referral.%' OR event_type LIKE 'reminder.%'")[0][0]
                for s in SERVICES)
    made = sql("referrals", "SELECT count(*) FROM referrals WHERE created_by <> 'bench'")[0][0]
    return total / made if made else float("nan")


def machine() -> str:
    cpus = os.cpu_count()
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    return f"{cpus} cores ({model}), Python {sys.version.split()[0]}"


def show(table: Table) -> None:
    console.print(table)


def ms(value: float) -> str:
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def main(run) -> None:
    """Set up, run, always clean up."""
    setup()
    try:
        run()
    finally:
        teardown()

