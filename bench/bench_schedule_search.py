"""Benchmark: meeting search when some meetings are not simply weekly (docs/SCHEDULES.md).

The same 100,000 synthetic meetings as bench_directory_search.py, on Postgres, loaded twice: all weekly,
and with 2% given a schedule (1% every other week, 0.5% first-weekday-of-the-month, 0.5% weekly with a
closed date next week). Weekly meetings are ordered and filtered in SQL alone; those with a schedule are
computed in Python, so this measures what they add: searches near an outward code (day + fellowship)
and soonest-first searches with no place (a fellowship, pages 1 and 3), which merge the two orders.
Targets: the near search's p95 under 20 ms (as bench_directory_search.py's) and its total still a full
scan's; a soonest-first search with no place (an ORDER BY over every meeting of the fellowship, slow
already) no more than 20% slower at p50 than with every meeting weekly.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from bench.bench_directory_search import (  # noqa: E402
    MIGRATIONS,
    QUERIES,
    full_scan,
    load,
    percentile,
    queries,
    synthetic_rows,
)
from services.directory import service  # noqa: E402
from services.directory.schemas import SearchIn  # noqa: E402
from shared import db  # noqa: E402
from shared.meeting_time import RFC_DAYS, meeting_guide_weekday  # noqa: E402

SHARE = 0.02


def with_schedules(rows: list[dict], rng: random.Random) -> list[dict]:
    today = dt.date.today()
    out = []
    for row in rows:
        row = {**row, "weekly": True, "exceptions": [], "rrule": None, "dtstart": None}
        draw = rng.random()
        if draw < SHARE:
            first = today + dt.timedelta(days=(row["day"] - meeting_guide_weekday(today)) % 7)
            if draw < SHARE / 2:
                row.update(rrule=f"FREQ=WEEKLY;INTERVAL=2;BYDAY={RFC_DAYS[row['day']]}", dtstart=first)
            elif draw < SHARE * 3 / 4:
                row.update(rrule=f"FREQ=MONTHLY;BYDAY=1{RFC_DAYS[row['day']]}", dtstart=first)
            else:
                row["exceptions"] = [{"date": (first + dt.timedelta(days=7)).isoformat(), "closed": True,
                                      "time": None, "end_time": None, "note": "Closed"}]
            row["weekly"] = False
        out.append(row)
    return out


def soonest(rng: random.Random, offset: int) -> list[SearchIn]:
    return [SearchIn(fellowship=rng.choice(["aa", "na", "smart"]), sort="soonest", limit=20, offset=offset)
            for _ in range(QUERIES)]


def timed(session: Session, searches: list[SearchIn]) -> tuple[float, float]:
    for search_in in searches[:20]:
        service.search_meetings(session, search_in=search_in)
    timings = []
    for search_in in searches:
        started = time.perf_counter()
        service.search_meetings(session, search_in=search_in)
        timings.append((time.perf_counter() - started) * 1000)
    return percentile(timings, 50), percentile(timings, 95)


def run(url: str, rows: list[dict], cases: dict[str, list[SearchIn]]) -> dict[str, tuple[float, float]]:
    db.migrate(MIGRATIONS, url)
    engine = db.make_engine(url)
    load(engine, rows)
    out = {}
    with Session(engine) as session:
        for case, searches in cases.items():
            out[case] = timed(session, searches)
        for search_in in cases["near, day + fellowship"][:5]:
            got = service.search_meetings(session, search_in=search_in.model_copy(update={"limit": 100}))["total"]
            assert got == full_scan(session, search_in), "a scheduled meeting went missing from a near search"
    engine.dispose()
    return out


def main() -> int:
    rng = random.Random(2026)
    base = synthetic_rows(rng)
    cases = {"near, day + fellowship": queries(rng), "soonest, page 1": soonest(rng, 0),
             "soonest, page 3": soonest(rng, 40)}
    admin = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    admin = admin.replace("postgresql+psycopg://", "postgresql://")
    results = {}
    for label, rows in (("all weekly", [{**r, "weekly": True, "exceptions": [], "rrule": None, "dtstart": None}
                                        for r in base]),
                        (f"{SHARE:.0%} scheduled", with_schedules(base, random.Random(18)))):
        name = f"fama_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            url = admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1) + f"/{name}"
            results[label] = run(url, rows, cases)
        finally:
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(f"{len(base):,} meetings on Postgres; {QUERIES} searches per case, through service.search_meetings")
    print(f"{'meetings':<16}{'case':<26}{'p50 ms':>9}{'p95 ms':>9}")
    for label, by_case in results.items():
        for case, (p50, p95) in by_case.items():
            print(f"{label:<16}{case:<26}{p50:>9.2f}{p95:>9.2f}")
    weekly, scheduled = results.values()
    ok = scheduled["near, day + fellowship"][1] < 20 and all(
        scheduled[case][0] <= 1.2 * weekly[case][0] for case in cases if case.startswith("soonest"))
    print("targets (near p95 < 20 ms; soonest p50 within 20% of all weekly):", "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
