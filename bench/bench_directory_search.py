"""Benchmark: `near` meeting searches over 100,000 meetings on SQLite and Postgres.

Loads synthetic meetings spread over Great Britain (around real outward-code centres),
then times ``service.search_meetings`` (radius 10 km, with day and fellowship filters)
against a plain full scan that measures the distance to every row, in the same process.
Two cases: near an outward code, and near a town or village by name (data/gb-places.csv).
Either may find fewer than 3 within the radius, and then the search also looks further out
for the nearest beyond it: that is part of what is timed.
Target, for each case: p95 under 20 ms and at least 20x faster than the full scan.

Postgres: TEST_POSTGRES_URL or postgresql://postgres@127.0.0.1:5432/postgres; the bench
creates and drops its own database.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg  # noqa: E402
from sqlalchemy import select  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from services.directory import service  # noqa: E402
from services.directory.geocode import default_geocoder, default_places  # noqa: E402
from services.directory.models import Meeting  # noqa: E402
from services.directory.schemas import SearchIn  # noqa: E402
from shared import db  # noqa: E402

MEETINGS = 100_000
QUERIES = 300
FULL_SCANS = 5
RADIUS_KM = 10.0
FELLOWSHIPS = ["aa"] * 5 + ["na"] * 2 + ["ca", "smart", "al-anon", "fa", "smart-family-friends"]
TYPES = [["O"], ["C"], ["O", "D"], ["C", "B"], ["O", "SP"], ["W"], ["M"], ["O", "BE"]]
MIGRATIONS = Path(__file__).resolve().parents[1] / "services" / "directory" / "migrations"
NOT_GB = ("BT", "GY", "JE", "IM", "ZE")  # Northern Ireland, Channel Islands, Isle of Man, Shetland


def centres() -> list[tuple[str, float, float]]:
    table = default_geocoder().table
    return [(code, lat, lng) for code, (lat, lng) in table.items() if not code.startswith(NOT_GB)]


def synthetic_rows(rng: random.Random) -> list[dict]:
    places = centres()
    now = dt.datetime.now(dt.UTC)
    rows = []
    for n in range(MEETINGS):
        _, lat, lng = rng.choice(places)
        lat, lng = lat + rng.gauss(0, 0.03), lng + rng.gauss(0, 0.045)
        online = rng.random() < 0.1
        types = rng.choice(TYPES)
        rows.append({
            "slug": f"bench-{n}", "name": f"Meeting {n}", "fellowship": rng.choice(FELLOWSHIPS), "day": rng.randrange(7),
            "time": f"{rng.randrange(7, 22):02d}:{rng.choice(['00', '30'])}", "end_time": None, "timezone": "Europe/London",
            "types": types, "types_key": "|" + "".join(f"{t}|" for t in types), "unknown_types": [],
            "attendance_option": "online" if online else "in_person", "latitude": lat, "longitude": lng,
            "approximate": False, "cell": None if online else service.grid_cell(lat, lng),
            "conference_url": "https://meet.example.org/x" if online else None,
            "booking_required": False, "peer_led": False, "partnership": False, "active": True,
            "created_at": now, "updated": now,
        })
    return rows


def load(engine, rows: list[dict]) -> float:
    started = time.perf_counter()
    with Session(engine) as session:
        for i in range(0, len(rows), 10_000):
            session.execute(Meeting.__table__.insert(), rows[i:i + 10_000])
        session.commit()
    with engine.connect() as conn:
        conn.exec_driver_sql("ANALYZE")
        conn.commit()
    return time.perf_counter() - started


def queries(rng: random.Random) -> list[SearchIn]:
    places = centres()
    return [SearchIn(near=rng.choice(places)[0], radius_km=RADIUS_KM, day=rng.randrange(7),
                     fellowship=rng.choice(["aa", "na", "smart"]), limit=20) for _ in range(QUERIES)]


def place_queries(rng: random.Random) -> list[SearchIn]:
    """Towns and villages in Great Britain whose name is theirs alone (a shared name asks which)."""
    names = sorted(found[0].name for found in default_places().by_key.values()
                   if len(found) == 1 and found[0].country != "Northern Ireland")
    return [SearchIn(near=rng.choice(names), radius_km=RADIUS_KM, day=rng.randrange(7),
                     fellowship=rng.choice(["aa", "na", "smart"]), limit=20) for _ in range(QUERIES)]


def full_scan(session: Session, search_in: SearchIn) -> int:
    """The baseline: fetch every live meeting and measure the distance to each one."""
    lat, lng, _, _ = service.resolve_near(search_in.near)
    found = []
    rows = session.execute(select(Meeting.id, Meeting.latitude, Meeting.longitude, Meeting.day, Meeting.fellowship,
                                  Meeting.attendance_option).where(Meeting.active.is_(True)))
    for row in rows:
        if row.latitude is None or row.attendance_option == "online":
            continue
        distance = service.haversine_km(lat, lng, row.latitude, row.longitude)
        if distance <= search_in.radius_km and row.day == search_in.day and row.fellowship == search_in.fellowship:
            found.append((distance, row.id))
    found.sort()
    return len(found)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def measure(name: str, url: str, rows: list[dict], cases: dict[str, list[SearchIn]]) -> list[dict]:
    db.migrate(MIGRATIONS, url)
    engine = db.make_engine(url)
    loaded = load(engine, rows)
    out = []
    with Session(engine) as session:
        for case, searches in cases.items():
            for search_in in searches[:20]:  # warm up caches and the connection
                service.search_meetings(session, search_in=search_in)
            timings, totals = [], []
            for search_in in searches:
                started = time.perf_counter()
                result = service.search_meetings(session, search_in=search_in)
                timings.append((time.perf_counter() - started) * 1000)
                totals.append(result["total"])
            scans = []
            for search_in in searches[:FULL_SCANS]:
                started = time.perf_counter()
                expected = full_scan(session, search_in)
                scans.append((time.perf_counter() - started) * 1000)
                got = service.search_meetings(session, search_in=search_in.model_copy(update={"limit": 100}))["total"]
                assert got == expected, f"{name}: indexed search found {got}, full scan {expected}"
            p50, p95 = percentile(timings, 50), percentile(timings, 95)
            scan = statistics.median(scans)
            out.append({"backend": name, "case": case, "load_s": loaded, "p50": p50, "p95": p95, "scan": scan,
                        "ratio": scan / p50, "ratio95": scan / p95, "mean_hits": statistics.mean(totals)})
        session.rollback()
    engine.dispose()
    return out


def main() -> int:
    rng = random.Random(2026)
    rows = synthetic_rows(rng)
    cases = {"outward code": queries(rng), "place name": place_queries(rng)}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        results += measure("sqlite", f"sqlite:///{tmp}/bench.db", rows, cases)
    admin = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    admin = admin.replace("postgresql+psycopg://", "postgresql://")
    name = f"fama_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        url = admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1) + f"/{name}"
        results += measure("postgres", url, rows, cases)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(f"{MEETINGS:,} meetings over Great Britain; {QUERIES} searches per case: near an outward code or a "
          f"place name, radius {RADIUS_KM:g} km, day + fellowship filters, through service.search_meetings")
    print(f"{'backend':<10}{'case':<14}{'load s':>8}{'p50 ms':>9}{'p95 ms':>9}{'full scan ms':>14}{'x faster p50':>14}"
          f"{'x faster p95':>14}{'mean hits':>11}")
    ok = True
    for r in results:
        print(f"{r['backend']:<10}{r['case']:<14}{r['load_s']:>8.1f}{r['p50']:>9.2f}{r['p95']:>9.2f}{r['scan']:>14.1f}"
              f"{r['ratio']:>14.0f}{r['ratio95']:>14.0f}{r['mean_hits']:>11.1f}")
        ok = ok and r["p95"] < 20 and r["ratio95"] >= 20
    print("targets (p95 < 20 ms, >= 20x faster than the full scan):", "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
