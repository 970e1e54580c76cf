"""How fast due reminders get out: dispatcher + two send workers vs a no-op Celery task.

Makes COUNT reminders due at once in a fresh Postgres database, runs the dispatcher (in
this process, as the scheduler would) and two real send worker processes with the dev
provider and the rate limit lifted, and compares the rate with two workers draining
no-op tasks over the same Redis. Then turns the rate limit on and checks it holds.

    .venv/bin/python bench/bench_notifications_dispatch.py [COUNT] [--limit-per-minute N]

Postgres: TEST_POSTGRES_URL or postgresql://postgres@127.0.0.1:5432/postgres (a database
is created and dropped). Redis: TEST_REDIS_URL / REDIS_URL or redis://127.0.0.1:6379/0,
under a private key prefix that is deleted afterwards.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psycopg
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RUN = uuid.uuid4().hex[:8]
ADMIN = (os.environ.get("TEST_POSTGRES_URL") or "postgresql://postgres@127.0.0.1:5432/postgres").replace(
    "postgresql+psycopg://", "postgresql://")
REDIS_URL = os.environ.get("TEST_REDIS_URL") or os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"
DB = f"fama_bench_{RUN}"
PREFIX = f"fama-bench-{RUN}:"
NOOP_QUEUE = "bench.noop"


def setup_environment() -> None:
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{DB}"')
    base = ADMIN.rpartition("/")[0].replace("postgresql://", "postgresql+psycopg://", 1)
    os.environ.update({
        "NOTIFICATIONS_DATABASE_URL": f"{base}/{DB}", "REDIS_URL": REDIS_URL, "REDIS_KEY_PREFIX": PREFIX,
        "FAMA_ENV": "test", "LOG_LEVEL": "WARNING", "NOTIFICATIONS_RATE_LIMIT_PER_MINUTE": "0",
        "NOTIFICATIONS_HOURLY_CAP": "1000000",
    })


def teardown() -> None:
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(match=f"{PREFIX}*", count=1000):
        client.delete(key)
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DB}" WITH (FORCE)')


class Workers:
    """Two real Celery worker processes (prefork) on one queue."""

    def __init__(self, queue: str, env: dict[str, str] | None = None, n: int = 2, concurrency: int = 1):
        self.procs = []
        for i in range(n):
            args = [sys.executable, "-m", "celery", "-A", "services.notifications.tasks", "worker", "-Q", queue,
                    "-c", str(concurrency), "-P", "prefork", "-n", f"bench{i}-{RUN}@%h", "--without-gossip", "--without-mingle",
                    "--without-heartbeat", "--loglevel", "WARNING"]
            log = open(f"/tmp/fama-bench-{RUN}-{queue}-{i}.log", "w")  # noqa: SIM115
            self.procs.append(subprocess.Popen(args, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=log,
                                               stderr=subprocess.STDOUT, start_new_session=True))
        self.client = redis.Redis.from_url(REDIS_URL)
        self.queue = queue

    def wait_ready(self, timeout: float = 60) -> None:
        # A worker is consuming once it has taken a probe message.
        from services.notifications.runtime import runtime

        for _ in self.procs:
            runtime.celery.send_task("notifications.noop", queue=self.queue)
        deadline = time.monotonic() + timeout
        while self.client.llen(f"{PREFIX}{self.queue}") or self.client.hlen(f"{PREFIX}unacked"):
            if time.monotonic() > deadline:
                raise RuntimeError("workers did not start")
            time.sleep(0.1)

    def stop(self) -> None:
        import signal

        for p in self.procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


def noop_rate(count: int, concurrency: int) -> float:
    from services.notifications.runtime import runtime

    workers = Workers(NOOP_QUEUE, concurrency=concurrency)
    try:
        workers.wait_ready()
        client = workers.client
        started = time.monotonic()
        celery = runtime.celery
        with celery.producer_or_acquire() as producer:
            for _ in range(count):
                celery.send_task("notifications.noop", queue=NOOP_QUEUE, producer=producer)
        while client.llen(f"{PREFIX}{NOOP_QUEUE}") or client.hlen(f"{PREFIX}unacked"):
            time.sleep(0.05)
        return count / (time.monotonic() - started)
    finally:
        workers.stop()


def make_due_reminders(count: int) -> None:
    """COUNT referrals, each with one reminder due now, to a distinct (made-up) number."""
    from services.notifications.models import ReferralContact, Reminder, meeting_replica
    from services.notifications.runtime import runtime
    from services.notifications.service import contact_hash
    from shared.events import MeetingSnapshot, utcnow

    now = utcnow()
    start = now + dt.timedelta(hours=3)
    m = MeetingSnapshot(slug="bench-meeting", name="Bench", fellowship="smart", day=2, time="19:30",
                        location="Church Hall", formatted_address="1 High Street, Croydon CR0 1AA")
    with runtime.transaction() as session:
        session.execute(meeting_replica.insert().values(slug=m.slug, fellowship=m.fellowship, active=True,
                                                        snapshot=m.model_dump(mode="json"), event_at=now))
    for offset in range(0, count, 5000):
        contacts, reminders = [], []
        for n in range(offset, min(count, offset + 5000)):
            rid, number = uuid.uuid4(), f"+4477009{n:05d}"
            hash_ = contact_hash(number, "sms")
            contacts.append({"referral_id": rid, "site_id": "croydon", "fellowship": "smart", "meeting_slug": m.slug,
                             "planned_date": start.date(), "detail": "discreet", "channel": "sms", "contact": number,
                             "contact_hash": hash_, "active": True, "planned": True, "created_at": now,
                             "updated_at": now})
            reminders.append({"id": uuid.uuid4(), "referral_id": rid, "site_id": "croydon", "fellowship": "smart",
                              "meeting_slug": m.slug, "kind": "hours_before", "channel": "sms", "contact_hash": hash_,
                              "meeting_start": start, "due_at": now, "status": "created", "attempts": 0,
                              "in_doubt": False, "created_at": now, "updated_at": now})
        with runtime.transaction() as session:
            session.execute(ReferralContact.__table__.insert(), contacts)
            session.execute(Reminder.__table__.insert(), reminders)


def count_sent() -> int:
    from sqlalchemy import text

    from services.notifications.runtime import runtime

    with runtime.engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM reminders WHERE status = 'sent'")).scalar_one()


def run_scheduler(stop: threading.Event) -> None:
    """What ``fama notifications scheduler`` runs: the dispatcher and the outbox sweep."""
    from services.notifications import sending
    from services.notifications.runtime import runtime

    next_sweep = 0.0
    while not stop.is_set():
        sending.dispatch_due()
        if time.monotonic() >= next_sweep:
            runtime.sweep_outbox()
            next_sweep = time.monotonic() + runtime.settings.outbox_sweep_seconds
        time.sleep(0.2)  # the scheduler's loop tick


def send_rate(count: int, env: dict[str, str], concurrency: int) -> tuple[float, float]:
    """(reminders per second end to end, seconds taken) for COUNT due reminders."""
    from sqlalchemy import text

    from services.notifications.runtime import runtime

    with runtime.engine.begin() as conn:
        conn.execute(text("TRUNCATE reminders, referral_contacts, contact_sends, dev_messages, outbox, meeting_replica"))
    make_due_reminders(count)
    workers = Workers("notifications.send", env, concurrency=concurrency)
    stop = threading.Event()
    try:
        workers.wait_ready()
        started = time.monotonic()
        dispatcher = threading.Thread(target=run_scheduler, args=(stop,), daemon=True)
        dispatcher.start()
        while count_sent() < count:
            time.sleep(0.25)
        elapsed = time.monotonic() - started
        return count / elapsed, elapsed
    finally:
        stop.set()
        workers.stop()


def measured_limit_rate() -> float:
    """Steady-state rate from the recorded send times (the first seconds' burst excluded)."""
    from sqlalchemy import text

    from services.notifications.runtime import runtime

    with runtime.engine.connect() as conn:
        times = [t for (t,) in conn.execute(text("SELECT sent_at FROM reminders WHERE sent_at IS NOT NULL ORDER BY sent_at"))]
    skip = len(times) // 10
    window = times[skip:]
    return (len(window) - 1) / (window[-1] - window[0]).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("count", nargs="?", type=int, default=50_000, help="reminders due at once")
    parser.add_argument("--noop-count", type=int, default=None, help="no-op tasks for the baseline (default COUNT/2)")
    parser.add_argument("--limit-per-minute", type=int, default=None,
                        help="rate limit for the rate-limit check (default: half the unlimited rate measured)")
    parser.add_argument("--concurrency", type=int, default=4, help="pool processes per worker (both runs)")
    parser.add_argument("--limit-count", type=int, default=None, help="reminders for the rate-limit check")
    args = parser.parse_args()
    setup_environment()
    try:
        from services.notifications.runtime import runtime

        runtime.migrate()
        baseline = noop_rate(args.noop_count or max(args.count // 2, 1000), args.concurrency)
        rate, elapsed = send_rate(args.count, {"NOTIFICATIONS_RATE_LIMIT_PER_MINUTE": "0"}, args.concurrency)
        # The check needs a limit below what the workers can do, or it proves nothing.
        limit = args.limit_per_minute or max(int(rate * 60 * 0.5), 60)
        limit_count = args.limit_count or max(int(limit / 60 * 20), 200)  # about 20 seconds' worth
        send_rate(limit_count, {"NOTIFICATIONS_RATE_LIMIT_PER_MINUTE": str(limit)}, args.concurrency)
        held = measured_limit_rate()
    finally:
        teardown()

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Notifications dispatch ({args.count:,} reminders due at once, "
                        f"2 workers x {args.concurrency} processes)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    table.add_row("no-op Celery tasks, same workers and Redis", f"{baseline:,.0f} /s", "")
    table.add_row("reminders sent (dispatcher + 2 workers, dev provider)", f"{rate:,.0f} /s", "")
    table.add_row(f"time for {args.count:,} reminders", f"{elapsed:,.1f} s", "")
    table.add_row("send rate / no-op rate", f"{rate / baseline:.0%}", ">= 50%")
    table.add_row(f"rate limit {limit:,}/min: measured", f"{held * 60:,.0f} /min", f"<= {limit * 1.05:,.0f}/min")
    table.add_row("measured / limit", f"{held * 60 / limit:.1%}", "95-105%")
    Console().print(table)


if __name__ == "__main__":
    main()
