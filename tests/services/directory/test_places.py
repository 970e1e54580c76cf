"""Finding meetings the way people search: towns and villages, exact postcodes, the nearest beyond
the radius, soonest first, and what is on now."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from fama.cli import app as cli
from services.directory import search, service
from services.directory.api import app
from services.directory.geocode import default_places, place_key
from services.directory.runtime import runtime
from services.directory.schemas import MeetingIn, SearchIn
from tests.services.directory.helpers import meeting

client = TestClient(app)
ONSPD_SAMPLE = Path(__file__).resolve().parents[2] / "fixtures" / "onspd" / "ONSPD_SAMPLE_UK.csv"


def add(**fields) -> None:
    with runtime.transaction() as session:
        service.create_meeting(session, meeting_in=MeetingIn(**meeting(**fields)))


@pytest.fixture
def cumbria(clean_state):
    # Kendal town centre is about 54.327, -2.748; the nearest meetings are all more than 5 km away.
    add(slug="windermere", name="Windermere AA", fellowship="aa", day=2, time="19:30", postcode=None,
        latitude=54.3806, longitude=-2.9066)  # about 11.5 km
    add(slug="penrith", name="Penrith NA", fellowship="na", day=3, time="19:00", postcode=None,
        latitude=54.6641, longitude=-2.7521)  # about 37 km
    add(slug="carlisle", name="Carlisle SMART", fellowship="smart", day=4, time="18:00", postcode=None,
        latitude=54.8925, longitude=-2.9329)  # about 64 km
    add(slug="workington", name="Workington AA", fellowship="aa", day=5, time="19:00", postcode=None,
        latitude=54.6425, longitude=-3.5441)  # about 60 km
    add(slug="kendal-online", name="Kendal Online", fellowship="aa", day=1, time="20:00", postcode=None,
        latitude=54.327, longitude=-2.748, attendance_option="online", conference_url="https://meet.example.org/k")


def test_a_town_is_found_by_name_across_britain(cumbria):
    response = client.get("/meetings", params={"near": "kendal", "radius_km": 20})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["near"]["resolved"] == "Kendal" and body["near"]["precision"] == "place"
    assert [r["slug"] for r in body["results"]] == ["windermere"]
    assert 10 < body["results"][0]["distance_km"] < 13
    for name in ("Croydon", "Gateshead", "Ystrad Mynach", "St. Andrews", "barrow-in-furness", "Keswick"):
        assert client.get("/meetings", params={"near": name}).status_code == 200, name


def test_a_name_several_places_share_offers_them_as_choices(cumbria):
    response = client.get("/meetings", params={"near": "Newport"})
    assert response.status_code == 422
    error = response.json()["errors"][0]
    assert error["field"] == "near" and error["type"] == "ambiguous"
    assert "Newport, Wales" in error["choices"] and "Newport, Isle of Wight" in error["choices"]
    assert error["choices"][0] == "Newport, Wales"  # the biggest first
    chosen = client.get("/meetings", params={"near": "Newport, Isle of Wight"}).json()["near"]
    assert chosen["resolved"] == "Newport, Isle of Wight" and 50.6 < chosen["latitude"] < 50.8
    assert client.get("/meetings", params={"near": "newport, wales"}).json()["near"]["latitude"] > 51.5
    # Every choice offered is a search that works.
    for choice in error["choices"]:
        assert client.get("/meetings", params={"near": choice}).status_code == 200, choice


def test_an_unknown_place_is_refused_by_name(cumbria):
    response = client.get("/meetings", params={"near": "Llareggub"})
    assert response.status_code == 422
    assert "unknown place 'Llareggub'" in response.json()["detail"]


def test_place_names_compare_as_people_write_them():
    assert place_key("St. Ives") == place_key("saint ives") == "saint ives"
    assert place_key("Barrow-in-Furness") == place_key("barrow in furness")
    places = default_places()
    assert len(places.find("Newport")) >= 6
    assert [p.county for p in places.find("St Ives")] == ["Cornwall"]


def test_beyond_the_radius_the_nearest_are_shown_with_their_distance(cumbria):
    body = client.get("/meetings", params={"near": "Kendal", "radius_km": 5}).json()
    assert body["total"] == 0 and body["results"] == []
    assert [r["slug"] for r in body["beyond"]] == ["windermere", "penrith", "workington"]
    distances = [r["distance_km"] for r in body["beyond"]]
    assert distances == sorted(distances) and distances[0] > 5
    # Filters still apply beyond the radius; online-only meetings are never "near".
    smart = client.get("/meetings", params={"near": "Kendal", "radius_km": 5, "fellowship": "smart"}).json()
    assert [r["slug"] for r in smart["beyond"]] == ["carlisle"]
    assert all(r["slug"] != "kendal-online" for r in body["beyond"])
    # Enough within the radius: nothing beyond is added.
    wide = client.get("/meetings", params={"near": "Kendal", "radius_km": 70}).json()
    assert wide["total"] == 4 and wide["beyond"] == []


def test_a_full_postcode_is_placed_by_its_district_until_the_ons_directory_is_loaded(cumbria):
    before = client.get("/meetings", params={"near": "CR0 1NX"}).json()["near"]
    assert before["precision"] == "district" and before["resolved"] == "CR0 1NX"
    assert client.get("/meetings", params={"near": "CR0 9ZZ"}).status_code == 200  # cannot be checked yet

    result = CliRunner().invoke(cli, ["directory", "postcodes", str(ONSPD_SAMPLE)])
    assert result.exit_code == 0, result.output
    assert "3 live postcodes loaded" in result.output  # terminated and unplaced ones left out

    assert "Postcodes: ONS Postcode Directory" in client.get("/").text  # its attribution, once loaded
    exact = client.get("/meetings", params={"near": "cr01nx"}).json()["near"]
    assert exact["precision"] == "postcode" and exact["resolved"] == "CR0 1NX"
    assert (exact["latitude"], exact["longitude"]) == (51.375297, -0.098193)
    kendal = client.get("/meetings", params={"near": "LA9 4DL", "radius_km": 20}).json()
    assert [r["slug"] for r in kendal["results"]] == ["windermere"]
    for gone in ("CR0 9ZZ", "LA9 9ZZ", "CA1 1AA"):  # made up, terminated, no location
        response = client.get("/meetings", params={"near": gone})
        assert response.status_code == 422, gone
        assert f"unknown postcode '{gone}'" in response.json()["detail"]
    # An outward code is still its district's centre.
    assert client.get("/meetings", params={"near": "CR0"}).json()["near"]["precision"] == "district"


def test_a_file_that_is_not_the_postcode_directory_changes_nothing(cumbria, tmp_path):
    assert CliRunner().invoke(cli, ["directory", "postcodes", str(ONSPD_SAMPLE)]).exit_code == 0
    wrong = tmp_path / "addresses.csv"
    wrong.write_text("postcode,latitude,longitude\nCR0 1AB,51.3,-0.1\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["directory", "postcodes", str(wrong)])
    assert result.exit_code == 2
    assert "not an ONS Postcode Directory CSV" in result.output and "Nothing was changed" in result.output
    assert client.get("/meetings", params={"near": "CR0 1NX"}).json()["near"]["precision"] == "postcode"


MONDAY_1830 = dt.datetime(2026, 11, 23, 18, 30, tzinfo=dt.UTC)  # Monday 23 November 2026, 6:30pm in London


def test_soonest_first_begins_today_and_marks_what_is_on(clean_state):
    add(slug="sunday", name="Sunday AA", day=0, time="10:00", end_time=None)
    add(slug="monday-early", name="Monday lunchtime", day=1, time="12:00", end_time="13:00")
    add(slug="monday-now", name="Monday evening", day=1, time="18:00", end_time="19:30")
    add(slug="monday-soon", name="Monday later", day=1, time="19:00", end_time=None)
    add(slug="tuesday", name="Tuesday AA", day=2, time="09:00", end_time=None)
    add(slug="appointment", name="By appointment", day=None, time=None, end_time=None)
    with runtime.sessions() as session:
        def order(**filters) -> list[str]:
            found = search.search_meetings(session, search_in=SearchIn(sort="soonest", now=MONDAY_1830, **filters))
            return [m.slug for m, _ in found["results"]]

        expected = ["monday-now", "monday-soon", "tuesday", "sunday", "monday-early", "appointment"]
        assert order() == expected
        assert order(near="CR0", radius_km=5) == expected  # the same order near a place
        assert order(days=[0, 2]) == ["tuesday", "sunday"]  # several days at once
        marks = {m.slug: search.happening(m, MONDAY_1830)
                 for m, _ in search.search_meetings(session, search_in=SearchIn(now=MONDAY_1830))["results"]}
    assert marks == {"monday-now": "in_progress", "monday-soon": "starting_soon", "sunday": None,
                     "monday-early": None, "tuesday": None, "appointment": None}


def test_the_api_sorts_soonest_and_takes_several_days(clean_state):
    for day in range(7):
        add(slug=f"day-{day}", name=f"Day {day}", day=day, time="12:00")
    body = client.get("/meetings", params=[("day", 1), ("day", 3), ("sort", "soonest")]).json()
    assert {r["slug"] for r in body["results"]} == {"day-1", "day-3"}
    # One in progress comes first (its next start is next week); then by next start.
    starts = [(r["happening"] != "in_progress", r["next_start_utc"]) for r in body["results"]]
    assert starts == sorted(starts)
    everything = client.get("/meetings", params={"sort": "soonest"}).json()["results"]
    starts = [(r["happening"] != "in_progress", r["next_start_utc"]) for r in everything]
    assert starts == sorted(starts) and len(starts) == 7
    next_week = (dt.date.today() + dt.timedelta(days=7)).isoformat()
    on_date = client.get("/meetings", params={"date": next_week}).json()["results"]
    assert len(on_date) == 1 and on_date[0]["next_start_local"].startswith(next_week)
