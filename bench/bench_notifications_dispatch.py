"""How fast due reminders get out: dispatcher + two send workers vs a no-op Celery task.

Makes COUNT reminders in a fresh Postgres database and starts two real send workers (dev
provider, rate limit lifted) and two no-op workers, same pool and concurrency, same Celery
settings (late acks, prefetch 1), same Redis. Then, after an untimed warm-up round, it
alternates rounds: COUNT/ROUNDS no-op tasks (first enqueue to last acknowledgement), then
as many reminders made due at once and pushed through by the dispatcher and the outbox
sweep running as the scheduler runs them (from due to the last reminder's sent_at). A
change in the machine's load thus weighs on both sides alike. Finally it turns the rate
limit on (half the measured rate) and checks it holds.

The dispatcher sends due reminders in chunks of NOTIFICATIONS_SEND_CHUNK per task (default
10); ``--chunk 1`` measures one task per reminder, the per-reminder cost of the whole path.

    .venv/bin/python bench/bench_notifications_dispatch.py [--count 50000] [--rounds 10] [--chunk N]

Prints a table of rates, the ratio and PASS/FAIL against the targets; exits non-zero only
when the run itself fails (a worker dies, a run stalls), not when a target is missed.

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


def setup_environment(chunk: int | None = None) -> None:
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{DB}"')
    base = ADMIN.rpartition("/")[0].replace("postgresql://", "postgresql+psycopg://", 1)
    os.environ.update({
        "NOTIFICATIONS_DATABASE_URL": f"{base}/{DB}", "REDIS_URL": REDIS_URL, "REDIS_KEY_PREFIX": PREFIX,
        "FAMA_ENV": "test", "LOG_LEVEL": "WARNING", "NOTIFICATIONS_RATE_LIMIT_PER_MINUTE": "0",
        "NOTIFICATIONS_HOURLY_CAP": "1000000",
    })
    if chunk is not None:
        os.environ["NOTIFICATIONS_SEND_CHUNK"] = str(chunk)


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
            args = [sys.executable, "-m", "celery", "-A", "bench.notifications_worker", "worker", "-Q", queue,
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

    def died(self) -> bool:
        return any(p.poll() is not None for p in self.procs)

    def stop(self) -> None:
        import signal

        for p in self.procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


def drained(client: redis.Redis, queue: str) -> bool:
    """Nothing waiting and nothing delivered but unacknowledged (acks are late: after the task)."""
    return not client.llen(f"{PREFIX}{queue}") and not client.hlen(f"{PREFIX}unacked")


def noop_round(workers: Workers, count: int) -> float:
    """Seconds for COUNT no-op tasks, from the first enqueue to the last acknowledgement."""
    from services.notifications.runtime import runtime

    started = time.monotonic()
    celery = runtime.celery
    with celery.producer_or_acquire() as producer:
        for _ in range(count):
            celery.send_task("notifications.noop", queue=NOOP_QUEUE, producer=producer)
    deadline = started + 60 + count / 20
    while not drained(workers.client, NOOP_QUEUE):
        if time.monotonic() > deadline or workers.died():
            raise RuntimeError(f"no-op run stalled: see /tmp/fama-bench-{RUN}-{NOOP_QUEUE}-*.log")
        time.sleep(0.02)
    return time.monotonic() - started


def make_due_reminders(count: int, *, parked: bool = False) -> None:
    """COUNT referrals, each with one reminder due now (or, parked, in a month), to a
    distinct (made-up) number."""
    from services.notifications.models import ReferralContact, Reminder, meeting_replica
    from services.notifications.runtime import runtime
    from services.notifications.service import contact_hash
    from shared.events import MeetingSnapshot, utcnow

    now = utcnow()
    start = now + dt.timedelta(hours=3)
    due = now + dt.timedelta(days=30) if parked else now
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
                              "meeting_start": start, "due_at": due, "status": "created", "attempts": 0,
                              "in_doubt": False, "created_at": now, "updated_at": now})
        with runtime.transaction() as session:
            session.execute(ReferralContact.__table__.insert(), contacts)
            session.execute(Reminder.__table__.insert(), reminders)


def count_sent() -> int:
    from sqlalchemy import text

    from services.notifications.runtime import runtime

    with runtime.engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM reminders WHERE status = 'sent'")).scalar_one()


def last_sent_at() -> dt.datetime:
    from sqlalchemy import text

    from services.notifications.runtime import runtime

    with runtime.engine.connect() as conn:
        return conn.execute(text("SELECT max(sent_at) FROM reminders")).scalar_one()


def unrelayed_events() -> int:
    from sqlalchemy import text

    from services.notifications.runtime import runtime

    with runtime.engine.connect() as conn:
        return conn.execute(text("SELECT count(*) FROM outbox WHERE relayed_at IS NULL")).scalar_one()


def run_scheduler(stop: threading.Event, active: threading.Event | None = None) -> None:
    """What ``fama notifications scheduler`` runs: the dispatcher and the outbox sweep
    (paused while ``active`` is clear, so it does not run during a no-op round)."""
    from services.notifications import sending
    from services.notifications.runtime import runtime

    next_sweep = 0.0
    while not stop.is_set():
        if active is not None and not active.is_set():
            time.sleep(0.05)
            continue
        sending.dispatch_due()
        if time.monotonic() >= next_sweep:
            runtime.sweep_outbox()
            next_sweep = time.monotonic() + runtime.settings.outbox_sweep_seconds
        time.sleep(0.2)  # the scheduler's loop tick


def send_rate(count: int, env: dict[str, str], concurrency: int) -> tuple[float, float, float]:
    """(reminders per second, seconds taken, seconds until every event was relayed) for COUNT
    due reminders, from the dispatcher's first claim to the last reminder marked sent."""
    from sqlalchemy import text

    from services.notifications.runtime import runtime
    from shared.events import utcnow

    with runtime.engine.begin() as conn:
        conn.execute(text("TRUNCATE reminders, referral_contacts, dev_messages, outbox, meeting_replica"))
    make_due_reminders(count)
    workers = Workers("notifications.send", env, concurrency=concurrency)
    stop = threading.Event()
    try:
        workers.wait_ready()
        started_at = utcnow()
        dispatcher = threading.Thread(target=run_scheduler, args=(stop,), daemon=True)
        dispatcher.start()
        wait_sent(count, workers, dispatcher)
        elapsed = (last_sent_at() - started_at).total_seconds()
        while unrelayed_events():
            if (utcnow() - started_at).total_seconds() - elapsed > 300 or not dispatcher.is_alive():
                raise RuntimeError("the outbox sweep did not relay every event")
            time.sleep(0.25)
        return count / elapsed, elapsed, (utcnow() - started_at).total_seconds()
    finally:
        stop.set()
        workers.stop()


def wait_sent(total: int, workers: Workers, dispatcher: threading.Thread) -> None:
    progress, progress_at = 0, time.monotonic()
    # Polled once a second (the poll costs the database too); the end of a round is its last
    # reminder's own sent_at, so the poll's period does not count.
    while (sent := count_sent()) < total:
        now = time.monotonic()
        if sent > progress:
            progress, progress_at = sent, now
        elif now - progress_at > 60 or workers.died() or not dispatcher.is_alive():
            raise RuntimeError(f"send run stalled at {sent:,}/{total:,}: see /tmp/fama-bench-{RUN}-notifications.send-*.log")
        time.sleep(1.0)


def interleaved(count: int, rounds: int, concurrency: int) -> list[tuple[int, float, int, float, float]]:
    """Rounds of no-op tasks then due reminders on the same running workers, so a change in
    the machine's load weighs on both alike. Returns per round (no-op tasks, seconds,
    reminders, seconds to the last sent, seconds more until its events were relayed)."""
    from sqlalchemy import text

    from shared.events import utcnow

    warm = 400  # a first, untimed round: pool processes, connections and prepared statements warm up
    make_due_reminders(count + warm, parked=True)
    noop_workers = Workers(NOOP_QUEUE, concurrency=concurrency)
    send_workers = Workers("notifications.send", {"NOTIFICATIONS_RATE_LIMIT_PER_MINUTE": "0"}, concurrency=concurrency)
    stop, active = threading.Event(), threading.Event()
    dispatcher = threading.Thread(target=run_scheduler, args=(stop, active), daemon=True)
    results = []
    try:
        noop_workers.wait_ready()
        send_workers.wait_ready()
        dispatcher.start()
        from services.notifications.runtime import runtime

        done = 0
        for r in range(-1, rounds):
            size = warm if r < 0 else count // rounds + (1 if r < count % rounds else 0)
            noop_s = noop_round(noop_workers, size)
            with runtime.engine.begin() as conn:
                started_at = conn.execute(text("SELECT now()")).scalar_one()
                conn.execute(text("UPDATE reminders SET due_at = now() WHERE id IN (SELECT id FROM reminders "
                                  "WHERE status = 'created' ORDER BY id LIMIT :n)"), {"n": size})
            active.set()  # the scheduler's dispatcher and outbox sweep run during the send round only
            done += size
            wait_sent(done, send_workers, dispatcher)
            send_s = (last_sent_at() - started_at).total_seconds()
            while unrelayed_events():
                if not dispatcher.is_alive():
                    raise RuntimeError("the scheduler thread died")
                time.sleep(0.25)
            relay_s = (utcnow() - started_at).total_seconds() - send_s
            active.clear()
            if r < 0:
                continue
            results.append((size, noop_s, size, send_s, relay_s))
            print(f"  round {r + 1}/{rounds}: no-op {size / noop_s:,.0f}/s, sends {size / send_s:,.0f}/s "
                  f"({size / send_s / (size / noop_s):.0%}), events relayed {relay_s:.1f} s after the last send", flush=True)
        return results
    finally:
        stop.set()
        noop_workers.stop()
        send_workers.stop()


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
    parser.add_argument("count_arg", nargs="?", type=int, default=None, metavar="COUNT", help="same as --count")
    parser.add_argument("--count", type=int, default=50_000, help="reminders due (and no-op tasks), default 50,000")
    parser.add_argument("--rounds", type=int, default=10, help="alternating no-op / send rounds the count is split into")
    parser.add_argument("--limit-per-minute", type=int, default=None,
                        help="rate limit for the rate-limit check (default: half the unlimited rate measured)")
    parser.add_argument("--concurrency", type=int, default=4, help="pool processes per worker (both runs)")
    parser.add_argument("--limit-count", type=int, default=None, help="reminders for the rate-limit check")
    parser.add_argument("--chunk", type=int, default=None, help="reminders per send task (default: the setting's, 10)")
    args = parser.parse_args()
    count = args.count_arg or args.count
    setup_environment(args.chunk)
    try:
        from services.notifications.runtime import runtime

        chunk = runtime.settings.send_chunk
        runtime.migrate()
        rounds = interleaved(count, max(1, min(args.rounds, count // 100)), args.concurrency)
        noop_tasks, noop_s = sum(r[0] for r in rounds), sum(r[1] for r in rounds)
        sent, send_s = sum(r[2] for r in rounds), sum(r[3] for r in rounds)
        baseline, rate = noop_tasks / noop_s, sent / send_s
        # The check needs a limit below what the workers can do, or it proves nothing.
        limit = args.limit_per_minute or max(int(rate * 60 * 0.5), 60)
        limit_count = args.limit_count or max(int(limit / 60 * 20), 200)  # about 20 seconds' worth
        send_rate(limit_count, {"NOTIFICATIONS_RATE_LIMIT_PER_MINUTE": str(limit)}, args.concurrency)
        held = measured_limit_rate() * 60
    finally:
        teardown()

    from rich.console import Console
    from rich.table import Table

    ratio = rate / baseline
    ratio_ok = ratio >= 0.5
    limit_ok = abs(held / limit - 1) <= 0.05
    ratios = sorted((r[2] / r[3]) / (r[0] / r[1]) for r in rounds)
    table = Table(title=f"Notifications dispatch: {count:,} reminders due, {len(rounds)} rounds alternating with as many "
                        f"no-op tasks, 2 workers x {args.concurrency} prefork processes each, same Redis, dev provider, "
                        f"{chunk} reminder{'s' if chunk > 1 else ''} per send task")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    table.add_column("", justify="center")
    table.add_row(f"no-op Celery tasks ({noop_tasks:,}, first enqueue to last ack)", f"{baseline:,.0f} /s", "", "")
    table.add_row(f"reminders sent, rate limit lifted ({sent:,}, due to last sent)", f"{rate:,.0f} /s", "", "")
    table.add_row("time: no-op rounds / send rounds", f"{noop_s:,.1f} s / {send_s:,.1f} s", "", "")
    table.add_row("events relayed after a round's last send (max)", f"{max(r[4] for r in rounds):,.1f} s", "", "")
    table.add_row("send rate / no-op rate, per round (min-max)", f"{ratios[0]:.0%}-{ratios[-1]:.0%}", "", "")
    table.add_row("send rate / no-op rate, all rounds", f"{ratio:.0%}", ">= 50%", "PASS" if ratio_ok else "FAIL")
    table.add_row(f"rate limit {limit:,}/min: measured", f"{held:,.0f} /min", f"{limit * 0.95:,.0f}-{limit * 1.05:,.0f}",
                  "PASS" if limit_ok else "FAIL")
    Console().print(table)
    # A measurement, not a test: a missed target is reported above; only errors exit non-zero.


if __name__ == "__main__":
    main()
