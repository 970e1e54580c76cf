"""Disclosure control that survives arithmetic: an attacker with everything one commissioner can
see - region totals, each site, each week, every fellowship and date filter, the CSV - never
recovers a count from 1 to 4.

The figures come from the real engagement functions (``engagement.tabulate``, which the API and
the dashboard both read through; the API test at the end goes through HTTP and Postgres). The
attacks are run against today's method and against the two methods it replaces, so the tests
are seen to catch a leak when there is one.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import itertools
import uuid
from types import SimpleNamespace

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.directory import engagement, service
from services.directory.api import app
from services.directory.runtime import runtime
from services.directory.schemas import SiteIn
from tests.services.directory.helpers import fix_rounding
from tests.support.auth import auth

METRIC = "referrals_made"
MONDAY = dt.date(2026, 11, 16)
REGION = "West Midlands"
# Two sites in the commissioner's region and one outside it.
SITES = (SimpleNamespace(id="birmingham", name="Birmingham", region=REGION),
         SimpleNamespace(id="solihull", name="Solihull", region=REGION),
         SimpleNamespace(id="sheffield", name="Sheffield", region="Yorkshire and the Humber"))
OURS = SITES[:2]


# --- what one commissioner can see -------------------------------------------------------------

def queries(fellowships: list[str], weeks: list[dt.date]):
    """Every read a West Midlands commissioner can make: the region or one site, any fellowship
    filter, any date range (given as whole weeks, and as mid-week days, which cover the same weeks)."""
    scopes = [engagement.Scope(f"{REGION} region", OURS, tuple(s.id for s in OURS), True, REGION)]
    scopes += [engagement.Scope(s.name, (s,), (s.id,), True) for s in OURS]
    ends = [None, *weeks]
    for scope, fellowship in itertools.product(scopes, [None, *fellowships]):
        for date_from, date_to in itertools.product(ends, ends):
            if date_from and date_to and date_from > date_to:
                continue
            yield scope, fellowship, date_from, date_to
            if date_from:  # a Wednesday: counts the whole week it falls in
                yield scope, fellowship, date_from + dt.timedelta(days=2), date_to


def cells_of(query, grid, **key) -> frozenset:
    """Which counters a figure adds up, worked out from the query alone (not from the code under test)."""
    scope, fellowship, date_from, date_to = query
    first = date_from - dt.timedelta(days=date_from.weekday()) if date_from else None
    return frozenset(
        (s, f, w) for (s, f, w) in grid
        if s in scope.site_ids and (fellowship is None or f == fellowship)
        and (first is None or w >= first) and (date_to is None or w <= date_to)
        and all(v == {"site_id": s, "fellowship": f, "week_start": w, "region": REGION}[k] for k, v in key.items()))


def figures_seen(grid: Grid, publish, *, check_csv: bool = False):
    """(counters covered, figure shown) for every figure of METRIC the commissioner sees, query by query.

    ``publish(cells, scope=..., ...)`` returns what ``engagement.tabulate`` returns.
    """
    fellowships = sorted({f for _, f, _ in grid})
    weeks = sorted({w for _, _, w in grid})
    cells = [engagement.Cell(s, f, w, METRIC, n, grid.points[(s, f, w)]) for (s, f, w), n in grid.items() if n]
    for query in queries(fellowships, weeks):
        scope, fellowship, date_from, date_to = query
        data = publish(cells, scope=scope, date_from=date_from, date_to=date_to, fellowship=fellowship)
        yield cells_of(query, grid), data["totals"][METRIC]
        for w in data["weeks"]:
            yield cells_of(query, grid, week_start=w["week_start"]), w["counts"][METRIC]
        for s in data["sites"]:
            yield cells_of(query, grid, site_id=s["site_id"]), s["counts"][METRIC]
        for r in data["regions"]:
            yield cells_of(query, grid, region=r["region"]), r["counts"][METRIC]
        for f in data["fellowships"]:
            yield cells_of(query, grid, fellowship=f["fellowship"]), f["counts"][METRIC]
        for row in data["rows"]:
            yield (cells_of(query, grid, site_id=row["site_id"], fellowship=row["fellowship"],
                            week_start=row["week_start"]), row["counts"][METRIC])
        if check_csv:  # the CSV says what the rows say
            csv_rows = list(csv.DictReader(io.StringIO(engagement.csv_text(data))))
            assert [r[METRIC] for r in csv_rows] == [str(row["counts"][METRIC]) for row in data["rows"]]


def published(grid: Grid, publish) -> dict[frozenset, object]:
    """Every figure the commissioner sees, by the counters it covers. The same counters are
    always shown the same way: two roundings of one count would let an attacker average them."""
    seen: dict[frozenset, object] = {}
    for cellset, shown in figures_seen(grid, publish, check_csv=True):
        assert seen.setdefault(cellset, shown) == shown, f"{sorted(cellset)} shown as {seen[cellset]!r} and {shown!r}"
    seen.pop(frozenset(), None)
    return seen


class Grid(dict):
    """True counts by (site, fellowship, week), with each counter's secret rounding point."""

    def __init__(self, counts: dict, points: dict | None = None):
        super().__init__(counts)
        self.points = points or dict.fromkeys(counts, 4)


def true_count(grid: dict, cellset: frozenset) -> int:
    return sum(grid[c] for c in cellset)


def value(shown) -> int:
    return 0 if shown == engagement.SMALL else shown


# --- the attacks ----------------------------------------------------------------------------

def differences_recover(grid: dict, figures: dict[frozenset, object]) -> list[str]:
    """Every difference A - B and sum-difference A - (B + C) of published figures (B, C inside A,
    disjoint) that comes out exactly equal to a true count from 1 to 4 of what is left."""
    found = []
    items = sorted(figures.items(), key=lambda kv: (len(kv[0]), sorted(kv[0])))
    numeric = [(c, value(v)) for c, v in items]
    for a, va in numeric:
        inside = [(b, vb) for b, vb in numeric if b < a]
        for b, vb in inside:
            left = a - b
            if 1 <= true_count(grid, left) <= 4 and va - vb == true_count(grid, left):
                found.append(f"{sorted(left)} = {va} - {vb}")
        for (b, vb), (c, vc) in itertools.combinations(inside, 2):
            if b & c:
                continue
            left = a - b - c
            if left and 1 <= true_count(grid, left) <= 4 and va - vb - vc == true_count(grid, left):
                found.append(f"{sorted(left)} = {va} - {vb} - {vc}")
    return found


def brute_force_recovers(grid: Grid, publish, most: int, draws: bool = True) -> list[str]:
    """The attacker knows the method and that no counter exceeds ``most``, and tries every grid of
    counts (with every way each counter could have been rounded) against everything published.
    Returns each small true count that only one candidate value explains."""
    observed = list(figures_seen(grid, publish))
    keys = sorted(grid)
    # The draws that matter for a count: one per distinct way ``rounded`` can go.
    options = [(n, t) for n in range(most + 1)
               for t in ({engagement.rounded(n, t): t for t in range(5)}.values() if draws else (4,))]
    explained: dict[frozenset, set[int]] = {cells: set() for cells, _ in observed if cells}
    explained.update({frozenset([k]): set() for k in keys})
    missing = object()
    for choice in itertools.product(options, repeat=len(keys)):
        candidate = Grid({k: n for k, (n, _) in zip(keys, choice, strict=True)},
                         {k: t for k, (_, t) in zip(keys, choice, strict=True)})
        seen = figures_seen(candidate, publish)
        if any(a != b for a, b in itertools.zip_longest(seen, observed, fillvalue=missing)):
            continue
        for cells, values in explained.items():
            values.add(true_count(candidate, cells))
    return [f"{sorted(cells)} must be {values}" for cells, values in explained.items()
            if 1 <= true_count(grid, cells) <= 4 and len(values) == 1]


# --- the methods ----------------------------------------------------------------------------

def ours(cells, **query):
    return engagement.tabulate(cells, **query)


def exact_then(shown):
    """A method that shows each figure of the exact table through ``shown`` (the old way and the textbook way)."""
    def publish(cells, *, scope, **query):
        data = engagement.tabulate(cells, scope=engagement.Scope(scope.title, scope.sites, scope.site_ids, False),
                                   **query)
        for part in ("weeks", "sites", "regions", "fellowships", "rows"):
            for item in data[part]:
                item["counts"] = {m: shown(n) for m, n in item["counts"].items()}
        data["totals"] = {m: shown(n) for m, n in data["totals"].items()}
        return data
    return publish


def suppress_each(n: int):
    """The method this replaces: each figure of 1-4 hidden on its own."""
    return "<5" if 1 <= n <= 4 else n


def round_each(n: int):
    """Each exact figure rounded to the nearest 5, 1-4 shown as "<5" (ONS style)."""
    return "<5" if 1 <= n <= 4 else 5 * ((n + 2) // 5)


# --- the tests ------------------------------------------------------------------------------

grids = st.integers(1, 3).flatmap(lambda n_weeks: st.integers(1, 3).flatmap(lambda n_fellowships: st.fixed_dictionaries({
    (s.id, f, MONDAY + dt.timedelta(weeks=w)): st.one_of(st.integers(0, 4), st.integers(0, 14))
    for s in SITES for f in ("aa", "na", "smart")[:n_fellowships] for w in range(n_weeks)
}))).flatmap(lambda counts: st.fixed_dictionaries({k: st.integers(0, 4) for k in counts}).map(
    lambda points: Grid(counts, points)))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(grid=grids)
def test_no_difference_of_published_figures_recovers_a_small_count(grid):
    figures = published(grid, ours)
    for cells, shown in figures.items():
        # Each figure is 0, "<5" or a multiple of 5, and none says more than the rounded counters
        # it adds up: their sum, "<5" when that is 0 but one of them is not.
        assert shown == engagement.SMALL or (shown % 5 == 0 and shown >= 0)
        parts = [engagement.rounded(grid[c], grid.points[c]) for c in cells]
        small = any(grid[c] and not engagement.rounded(grid[c], grid.points[c]) for c in cells)
        assert shown == (engagement.SMALL if sum(parts) == 0 and small else sum(parts))
        assert (shown == 0) == (true_count(grid, cells) == 0)
        assert not any(c[0] == "sheffield" for c in cells)  # another region's site is never counted in
    assert differences_recover(grid, figures) == []


def test_the_attacks_catch_the_methods_that_leak():
    """The review's case (5 referrals at Solihull, 1 at Birmingham, to SMART), and a case that
    defeats rounding each exact figure: the same attacks find both counts."""
    review = Grid({("birmingham", "aa", MONDAY): 0, ("birmingham", "smart", MONDAY): 1,
                   ("solihull", "aa", MONDAY): 5, ("solihull", "smart", MONDAY): 0})
    assert differences_recover(review, published(review, exact_then(suppress_each)))
    assert brute_force_recovers(review, exact_then(suppress_each), most=5, draws=False)
    # Birmingham 4; Solihull 7 AA and 7 SMART: 5 + 5 shown, 15 in all, 20 for the region, so
    # Solihull is 13 or 14 (from 10-14 and 13-17) and Birmingham at least 18 - 14 = 4.
    rounding = Grid({("birmingham", "aa", MONDAY): 4, ("birmingham", "smart", MONDAY): 0,
                     ("solihull", "aa", MONDAY): 7, ("solihull", "smart", MONDAY): 7})
    assert any(found.startswith("[('birmingham', 'aa',") for found in
               brute_force_recovers(rounding, exact_then(round_each), most=8, draws=False))


@pytest.mark.parametrize("counts", [
    {("birmingham", "aa"): 0, ("birmingham", "smart"): 1, ("solihull", "aa"): 5, ("solihull", "smart"): 0},
    {("birmingham", "aa"): 4, ("birmingham", "smart"): 0, ("solihull", "aa"): 5, ("solihull", "smart"): 5},
    {("birmingham", "aa"): 1, ("birmingham", "smart"): 2, ("solihull", "aa"): 3, ("solihull", "smart"): 4},
])
@pytest.mark.parametrize("points", [0, 4, "mixed"])
def test_brute_force_of_every_consistent_grid_recovers_no_small_count(counts, points):
    keys = [(s, f, MONDAY) for s, f in counts]
    draws = dict(zip(keys, (0, 4, 1, 3), strict=True)) if points == "mixed" else dict.fromkeys(keys, points)
    grid = Grid({(s, f, MONDAY): n for (s, f), n in counts.items()}, draws)
    assert brute_force_recovers(grid, ours, most=5) == []


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(counts=st.lists(st.integers(0, 5), min_size=4, max_size=4), points=st.lists(st.integers(0, 4), min_size=4,
                                                                                     max_size=4))
def test_brute_force_over_weeks_recovers_no_small_count(counts, points):
    """Two sites, one fellowship, two weeks: the date filters give every week range."""
    keys = [(s, "aa", MONDAY + dt.timedelta(weeks=w)) for s in ("birmingham", "solihull") for w in (0, 1)]
    grid = Grid(dict(zip(keys, counts, strict=True)), dict(zip(keys, points, strict=True)))
    assert brute_force_recovers(grid, ours, most=5) == []


# --- the review's attack through the API ---------------------------------------------------------

@pytest.fixture
def west_midlands(clean_state):
    with runtime.transaction() as session:
        for site in SITES:
            service.create_site(session, site_in=SiteIn(id=site.id, name=site.name, host_agency=f"{site.name} CGL",
                                                        region=site.region))
        for site_id, fellowship, n in (("solihull", "aa", 5), ("birmingham", "smart", 1)):
            for _ in range(n):
                engagement.count_facts(session, subject=str(uuid.uuid4()), metrics=[METRIC], site_id=site_id,
                                       fellowship=fellowship, occurred_at=dt.datetime(2026, 11, 17, 10, tzinfo=dt.UTC))


@pytest.mark.parametrize("point", [None, 0, 1, 2, 3, 4])
def test_the_reviews_subtraction_no_longer_reveals_birminghams_one_referral(west_midlands, point):
    """5 referrals at Solihull, 1 at Birmingham, same region: total minus Solihull, and the
    fellowship filters, no longer give Birmingham's 1 (whichever way its counter rounds)."""
    if point is not None:
        fix_rounding(point)
    client = TestClient(app)
    commissioner = auth("commissioner", region=REGION)

    def read(path="/engagement", **params):
        response = client.get(path, params=params, headers=commissioner)
        assert response.status_code == 200, response.text
        return response.json()

    def figures(body):
        yield body["totals"][METRIC]
        for part in ("weeks", "sites"):
            yield from (item["counts"][METRIC] for item in body[part])

    region = read()
    sites = {s["site_id"]: s["counts"][METRIC] for s in region["sites"]}
    assert region["suppressed"] is True and set(sites) == {"birmingham", "solihull"}
    assert sites["solihull"] == 5 and sites["birmingham"] in ("<5", 5)
    assert region["totals"][METRIC] - sites["solihull"] in (0, 5)  # never 1
    views = [region, read(fellowship="aa"), read(fellowship="smart"), read("/sites/birmingham/engagement"),
             read("/sites/birmingham/engagement", fellowship="smart"), read(**{"from": "2026-11-18"}),
             read(**{"from": "2026-11-16", "to": "2026-11-16"})]
    for body in views:
        for shown in figures(body):
            assert shown in (0, "<5") or shown % 5 == 0, body
    assert read(fellowship="aa")["totals"][METRIC] == 5
    assert region["totals"][METRIC] - read(fellowship="aa")["totals"][METRIC] in (0, 5)
    download = client.get("/engagement.csv", headers=commissioner)
    rows = {(r["site_id"], r["fellowship"]): r[METRIC] for r in csv.DictReader(io.StringIO(download.text))}
    assert rows[("solihull", "aa")] == "5" and rows[("birmingham", "smart")] in ("<5", "5")
    # Admins still see exact counts.
    admin = client.get("/engagement", headers=auth("admin")).json()
    assert admin["suppressed"] is False and admin["totals"][METRIC] == 6
