"""Public meeting search: near a postcode or a point, filters, pagination, next occurrence."""

from __future__ import annotations

import datetime as dt
import random

import pytest
from fastapi.testclient import TestClient

from services.directory import search, service
from services.directory.api import app
from services.directory.geocode import OutcodeGeocoder, normalise_postcode
from services.directory.runtime import runtime
from services.directory.schemas import MeetingIn, SearchIn
from tests.services.directory.helpers import meeting

client = TestClient(app)

CROYDON = (51.37223, -0.07463)  # centre of CR0


def add(**fields) -> None:
    with runtime.transaction() as session:
        service.create_meeting(session, meeting_in=MeetingIn(**meeting(**fields)))


@pytest.fixture
def meetings(clean_state):
    add(slug="croydon-near", name="Croydon Hub AA", fellowship="aa", day=1, time="19:30", types=["O", "B"],
        latitude=51.3725, longitude=-0.0745, location="Friends Meeting House")
    add(slug="croydon-4km", name="Thornton Heath NA", fellowship="na", day=1, time="12:00", types=["C"],
        latitude=51.4085, longitude=-0.0830)
    add(slug="sutton-8km", name="Sutton SMART", fellowship="smart", day=3, time="18:00", types=["O"],
        latitude=51.36599, longitude=-0.19127, attendance_option="hybrid", conference_url="https://meet.example.org/s")
    add(slug="croydon-15km", name="Bromley AA", fellowship="aa", day=1, time="20:00", types=["O"],
        latitude=51.4800, longitude=0.1000)
    add(slug="birmingham", name="Birmingham AA", fellowship="aa", day=1, time="19:30", types=["O", "B"],
        latitude=52.47872, longitude=-1.90723)
    add(slug="online-only", name="Croydon Online AA", fellowship="aa", day=1, time="19:00", types=["O"],
        latitude=51.3723, longitude=-0.0746, attendance_option="online", conference_url="https://zoom.example.org/j/1")
    add(slug="by-appointment", name="Croydon Family Support", fellowship="fa", day=None, time=None, end_time=None,
        latitude=51.373, longitude=-0.075)


def slugs(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [r["slug"] for r in response.json()["results"]]


def test_near_an_outward_code_sorts_by_distance_within_the_radius(meetings):
    response = client.get("/meetings", params={"near": "cr0", "radius_km": 10})
    assert slugs(response) == ["croydon-near", "by-appointment", "croydon-4km", "sutton-8km"]
    results = response.json()["results"]
    assert results[0]["distance_km"] < 0.2
    assert 3.5 < results[2]["distance_km"] < 4.5 and 7.5 < results[3]["distance_km"] < 9
    assert response.json()["total"] == 4
    assert response.json()["near"]["resolved"] == "CR0"
    # The online-only meeting sits at the same spot but is not "near" anything.
    assert "online-only" not in slugs(response)
    assert slugs(client.get("/meetings", params={"near": "CR0", "radius_km": 20}))[-1] == "croydon-15km"


def test_full_postcode_and_point_work_like_the_outward_code(meetings):
    by_code = slugs(client.get("/meetings", params={"near": "CR0 2AB", "radius_km": 5}))
    by_point = slugs(client.get("/meetings", params={"near": f"{CROYDON[0]},{CROYDON[1]}", "radius_km": 5}))
    assert by_code == by_point == ["croydon-near", "by-appointment", "croydon-4km"]


def test_filters_combine(meetings):
    assert slugs(client.get("/meetings", params={"near": "CR0", "radius_km": 20, "day": 1, "fellowship": "aa"})) == [
        "croydon-near", "croydon-15km"]
    assert slugs(client.get("/meetings", params={"near": "CR0", "radius_km": 20, "types": "O,B"})) == ["croydon-near"]
    assert slugs(client.get("/meetings", params=[("types", "O"), ("types", "B")])) == ["birmingham", "croydon-near"]
    assert slugs(client.get("/meetings", params={"day": 1, "starts_after": "19:00", "starts_before": "19:45"})) == [
        "online-only", "birmingham", "croydon-near"]
    assert slugs(client.get("/meetings", params={"attendance": "online"})) == ["online-only", "sutton-8km"]
    assert slugs(client.get("/meetings", params={"attendance": "hybrid"})) == ["sutton-8km"]
    assert "online-only" not in slugs(client.get("/meetings", params={"attendance": "in_person"}))
    assert slugs(client.get("/meetings", params={"q": "friends meeting"})) == ["croydon-near"]
    # Online-only meetings are found by everything but distance.
    assert slugs(client.get("/meetings", params={"q": "online", "fellowship": "aa"})) == ["online-only"]


def test_results_name_their_types_and_next_occurrence(meetings):
    [result] = client.get("/meetings", params={"q": "croydon hub"}).json()["results"]
    assert result["type_names"] == [{"code": "O", "name": "Open"}, {"code": "B", "name": "Big Book"}]
    local = dt.datetime.fromisoformat(result["next_start_local"])
    utc = dt.datetime.fromisoformat(result["next_start_utc"])
    assert local == utc and utc.utcoffset() == dt.timedelta(0)
    assert local.strftime("%A %H:%M") == "Monday 19:30"
    assert dt.timedelta(0) < utc - dt.datetime.now(dt.UTC) <= dt.timedelta(days=7)
    [appointment] = client.get("/meetings", params={"fellowship": "fa"}).json()["results"]
    assert appointment["next_start_local"] is None


def test_pagination_reports_the_total(meetings):
    first = client.get("/meetings", params={"limit": 2}).json()
    second = client.get("/meetings", params={"limit": 2, "page": 2}).json()
    rest = client.get("/meetings", params={"limit": 10, "offset": 4}).json()
    assert first["total"] == second["total"] == rest["total"] == 7
    everything = [r["slug"] for r in first["results"] + second["results"] + rest["results"]]
    assert len(everything) == len(set(everything)) == 7
    near = client.get("/meetings", params={"near": "CR0", "radius_km": 10, "limit": 3, "offset": 3}).json()
    assert near["total"] == 4 and [r["slug"] for r in near["results"]] == ["sutton-8km"]


@pytest.mark.parametrize(("params", "field", "words"), [
    ({"near": "ZZ9"}, "near", "unknown postcode 'ZZ9'"),
    ({"near": "somewhere nice"}, "near", "unknown place 'somewhere nice'"),
    ({"near": "\U0001F600\U0001F37A"}, "near", "neither a UK postcode, a place name"),
    ({"near": "x" * 500}, "near", "at most 60 characters"),
    ({"near": "  "}, "near", "is empty"),
    ({"q": ""}, "q", "no letters or numbers"),
    ({"q": "\U0001F600"}, "q", "no letters or numbers"),
    ({"q": "a" * 500}, "q", "at most 200 characters"),
    ({"near": "CR0", "radius_km": 10_000}, "radius_km", "less than or equal to 200"),
    ({"date": "2026-02-30"}, "date", "day value is outside expected range"),
    ({"date": "2020-01-01"}, "date", "has passed"),
    ({"sort": "distance"}, "sort", "needs near"),
    ({"near": "95,0"}, "near", "latitude must be within"),
    ({"near": "CR0", "radius_km": 0}, "radius_km", "greater than 0"),
    ({"near": "CR0", "radius_km": 500}, "radius_km", "less than or equal to 200"),
    ({"day": 7}, "day", "0-6"),
    ({"starts_after": "7pm"}, "starts_after", "pattern"),
    ({"starts_after": "20:00", "starts_before": "19:00"}, "starts_before", "earlier"),
    ({"types": "O,QQ"}, "types", "QQ"),
    ({"attendance": "telepathy"}, "attendance", "in_person"),
    ({"limit": 0}, "limit", "greater than or equal to 1"),
    ({"page": 0}, "page", "greater than or equal to 1"),
])
def test_bad_search_values_get_422_saying_so(clean_state, params, field, words):
    response = client.get("/meetings", params=params)
    assert response.status_code == 422, response.text
    assert any(e["field"] == field and words in e["message"] for e in response.json()["errors"]), response.json()


def test_next_occurrence_crosses_the_october_change(clean_state):
    add(slug="sunday-morning", day=0, time="10:00")  # Sunday 25 October 2026: clocks go back at 02:00
    with runtime.sessions() as session:
        m = service.get_meeting(session, "sunday-morning")
        saturday = dt.datetime(2026, 10, 24, 12, 0, tzinfo=dt.UTC)  # still BST
        start = search.next_start(m, saturday)
        assert start.isoformat() == "2026-10-25T10:00:00+00:00"  # GMT: 10:00 UTC, not 09:00
        week_before = search.next_start(m, saturday - dt.timedelta(days=7))
        assert week_before.isoformat() == "2026-10-18T10:00:00+01:00"
        assert week_before.astimezone(dt.UTC).hour == 9


def test_next_occurrence_crosses_the_march_change(clean_state):
    add(slug="sunday-night", day=0, time="19:00")  # Sunday 28 March 2027: clocks go forward at 01:00
    with runtime.sessions() as session:
        m = service.get_meeting(session, "sunday-night")
        start = search.next_start(m, dt.datetime(2027, 3, 27, 23, 30, tzinfo=dt.UTC))
        assert start.isoformat() == "2027-03-28T19:00:00+01:00"
        assert start.astimezone(dt.UTC).strftime("%H:%M") == "18:00"
        found = search.search_meetings(session, search_in=SearchIn(near="CR0", day=0))
        assert [mm.slug for mm, _ in found["results"]] == ["sunday-night"]


def test_grid_ranges_find_exactly_what_a_full_scan_finds():
    """The spatial index is an optimisation only: same answer as measuring every point."""
    rng = random.Random(7)
    points = [(rng.uniform(49.9, 58.7), rng.uniform(-7.5, 1.8)) for _ in range(20_000)]
    for _ in range(30):
        lat, lng = rng.uniform(50.5, 58), rng.uniform(-5, 1.5)
        radius = rng.choice([1, 5, 10, 25, 60])
        ranges, (lat0, lat1, lng0, lng1) = search.cell_ranges(lat, lng, radius)
        indexed = {p for p in points
                   if any(a <= search.grid_cell(*p) <= b for a, b in ranges) and lat0 <= p[0] <= lat1 and lng0 <= p[1] <= lng1
                   and search.haversine_km(lat, lng, *p) <= radius}
        scanned = {p for p in points if search.haversine_km(lat, lng, *p) <= radius}
        assert indexed == scanned


def test_postcodes_normalise_and_resolve_offline():
    geocoder = OutcodeGeocoder.from_csv()
    assert len(geocoder.table) == 2848
    assert normalise_postcode(" sw1a1aa ") == "SW1A 1AA"
    assert normalise_postcode("b1") == "B1"
    assert normalise_postcode("12345") is None
    assert geocoder.locate("B1 1AA") == geocoder.locate("b1") == (52.47872, -1.90723)
    assert geocoder.locate("ZZ9 9ZZ") is None
    assert search.haversine_km(51.5074, -0.1278, 53.4808, -2.2426) == pytest.approx(262, abs=2)  # London-Manchester
