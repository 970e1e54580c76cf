"""What one request or one event costs in round trips and CPU, in one process, one at a time.

Unlike the wrk benches' latencies, these counts do not depend on what else the machine runs:
SQL statements, transaction ends (commit / rollback) and connection pings to Postgres, Redis round
trips (a pipeline is one), the thread hand-offs of the request, and this process's CPU time per
request or event (median of the repeats). Run before and after a change of a hot path.

The requests go through each app in this process (ASGI, httpx's transport), so everything FastAPI,
the middleware, the dependencies and the database do is counted; the events are the very outbox
rows the referrals created, handled as the consumers' Celery tasks handle them (``handle_batch``).

    .venv/bin/python bench/round_trips.py [REPEATS]   (default 200)
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from collections import Counter

import common
from rich.table import Table

COUNTS: Counter = Counter()
STATEMENTS: list[str] = []  # of the last call measured
# ROUND_TRIPS_PROFILE=<part of a row's name>: that row is also profiled (pyinstrument) and its last
# call's SQL printed, into /tmp/fama-round-trips-<run>.txt
PROFILE = os.environ.get("ROUND_TRIPS_PROFILE")


def instrument() -> None:
    """Count what crosses to Postgres and Redis, and every hand-off to a worker thread."""
    import anyio.to_thread
    import redis.asyncio.connection
    import redis.connection
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    @event.listens_for(Engine, "before_cursor_execute")
    def _statement(_conn, _cursor, statement, *_args, **_kw):
        COUNTS["sql"] += 1
        STATEMENTS.append(" ".join(statement.split())[:300])

    @event.listens_for(Engine, "commit")
    def _commit(_conn):
        COUNTS["commit"] += 1

    @event.listens_for(Engine, "rollback")
    def _rollback(_conn):
        COUNTS["rollback"] += 1

    from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

    ping = PGDialect_psycopg.do_ping

    def counted_ping(self, dbapi_connection):
        COUNTS["ping"] += 1
        return ping(self, dbapi_connection)

    PGDialect_psycopg.do_ping = counted_ping

    for cls in (redis.connection.Connection, redis.asyncio.connection.Connection):
        original = cls.send_packed_command

        def counted(self, *args, _original=original, **kw):
            COUNTS["redis"] += 1
            return _original(self, *args, **kw)

        cls.send_packed_command = counted

    run_sync = anyio.to_thread.run_sync

    async def counted_run_sync(*args, **kw):
        COUNTS["thread"] += 1
        return await run_sync(*args, **kw)

    anyio.to_thread.run_sync = counted_run_sync


def measure(label: str, repeats: int, once) -> dict:
    """Call ``once(i)`` ``repeats`` times after a warm-up; counts per call, CPU per call (median)."""
    for i in range(5):
        once(-1 - i)
    COUNTS.clear()
    cpu = []
    profiler = None
    if PROFILE and PROFILE in label:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.0002, async_mode="disabled")
        profiler.start()
    for i in range(repeats):
        STATEMENTS.clear()
        t0 = time.process_time()
        once(i)
        cpu.append((time.process_time() - t0) * 1000)
    if profiler is not None:
        profiler.stop()
        with open(f"/tmp/fama-round-trips-{common.RUN}.txt", "a") as f:
            f.write(f"== {label}\n" + "\n".join(STATEMENTS) + "\n")
            f.write(profiler.output_text(unicode=False, color=False, show_all=False))
        print(f"profile of {label}: /tmp/fama-round-trips-{common.RUN}.txt", file=sys.stderr)
    row = {k: COUNTS[k] / repeats for k in ("sql", "commit", "rollback", "ping", "redis", "thread")}
    row["cpu_ms"] = statistics.median(cpu)
    row["label"] = label
    return row


def run() -> None:
    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    common.load_data(8.0)
    instrument()
    import httpx

    from services.directory.api import app as directory_app
    from services.referrals.api import app as referrals_app
    from tests.support.auth import auth

    loop = asyncio.new_event_loop()
    clients = {name: httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=("127.0.0.1", 5000)),
                                       base_url="http://fama.test")
               for name, app in (("directory", directory_app), ("referrals", referrals_app))}

    def request(service: str, method: str, path: str, expect: int, **kw):
        response = loop.run_until_complete(clients[service].request(method, path, **kw))
        if response.status_code != expect:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:300]}")
        return response

    import bench_api_latency

    fresh = [p for _m, p, _h, _b in bench_api_latency.search_requests(2000)]
    slugs = [r[0] for r in common.sql("directory", "SELECT slug FROM meetings ORDER BY slug")]
    site_of = dict(common.sql("directory", "SELECT slug, site_id FROM meetings"))
    headers = {s: auth("keyworker", s) for s in common.SITES}
    rows = []
    # A different search each time (none answered from what was kept), then one asked again.
    rows.append(measure("GET /meetings?near=… (computed)", repeats,
                        lambda i: request("directory", "GET", fresh[i % len(fresh)] + f"&limit={20 + i % 7}", 200)))
    rows.append(measure("GET /meetings?near=… (kept)", repeats,
                        lambda i: request("directory", "GET", "/meetings?near=SE1&radius_km=10", 200)))
    rows.append(measure("GET /meetings/{slug} (computed)", repeats,
                        lambda i: request("directory", "GET", f"/meetings/{slugs[(i + 10) % len(slugs)]}", 200)))
    rows.append(measure("GET /meetings/{slug} (kept)", repeats,
                        lambda i: request("directory", "GET", f"/meetings/{slugs[0]}", 200)))
    rows.append(measure("GET /healthz", repeats, lambda i: request("directory", "GET", "/healthz", 200)))
    made: list[str] = []
    tag = common.RUN.translate(str.maketrans("0123456789", "ABCDEFGHJK"))  # letters: not like a phone number

    def refer(i: int) -> None:
        slug = slugs[abs(i) * 7 % len(slugs)]
        body = {"meeting_slug": slug, "client_reference": f"RT-{tag}-{i + 10:05d}", "support": "none",
                "mobile": f"07911 {200010 + i:06d}", "consent": {"to_reminders": True, "wording_version": "2025-01"}}
        made.append(request("referrals", "POST", "/referrals", 201, json=body, headers=headers[site_of[slug]]).json()["id"])

    rows.append(measure("POST /referrals", repeats, refer))
    rows.extend(event_rows(made[5:]))
    t = Table("what", "SQL statements", "commits", "rollbacks", "pings", "Redis round trips", "thread hand-offs",
              "CPU ms (this process)", title=f"Per request / event, one at a time ({common.machine()})")
    for r in rows:
        t.add_row(r["label"], *(f"{r[k]:.2f}" for k in ("sql", "commit", "rollback", "ping", "redis", "thread")),
                  f"{r['cpu_ms']:.2f}")
    common.show(t)


def event_rows(referral_ids: list[str]) -> list[dict]:
    """Each consumer handles the events the referrals made, as its worker's batch task does: per
    event (a batch divided by its events)."""
    from services.directory.runtime import runtime as directory
    from services.directory.tasks import HANDLERS as directory_handlers
    from services.notifications.runtime import runtime as notifications
    from services.notifications.tasks import HANDLERS as notifications_handlers
    from services.referrals.runtime import runtime as referrals
    from services.referrals.tasks import HANDLERS as referrals_handlers

    def bodies(service: str, event_type: str, subscriber: str) -> list:
        found = common.sql(service, "SELECT body FROM outbox WHERE event_type = :t AND subscriber = :s ORDER BY id",
                           t=event_type, s=subscriber)
        return [b if isinstance(b, dict) else json.loads(b) for (b,) in found]

    rows = []
    created_n = bodies("referrals", "referral.created", "notifications")
    created_d = bodies("referrals", "referral.created", "directory")
    for label, rt, handlers, items in (
        ("event referral.created → notifications (plans 3)", notifications, notifications_handlers, created_n),
        ("event referral.created → directory (counts)", directory, directory_handlers, created_d),
    ):
        it = iter(items)
        rows.append(measure(label, len(items) - 10, lambda _i, rt=rt, handlers=handlers, it=it:
                            rt.handle_batch([next(it)], handlers)))
    scheduled = bodies("notifications", "reminder.scheduled", "referrals")
    by_referral: dict[str, list] = {}
    for b in scheduled:
        by_referral.setdefault(b["payload"]["referral_id"], []).append(b)
    batches = list(by_referral.values())
    size = statistics.mean(len(b) for b in batches[5:len(batches) - 5])  # the measured ones
    groups = iter(batches)
    row = measure(f"event reminder.scheduled → referrals (batches of {size:.1f}, per event)", len(batches) - 10,
                  lambda _i: referrals.handle_batch(next(groups), referrals_handlers))
    for k in ("sql", "commit", "rollback", "ping", "redis", "thread", "cpu_ms"):
        row[k] /= size
    rows.append(row)
    return rows


if __name__ == "__main__":
    common.main(run)
