"""Find a meeting as people search: a town's name, a name several places share, the nearest beyond
the distance chosen, several days, types and keywords; and a meeting's calendar file and directions."""

from __future__ import annotations

import datetime as dt
import re
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from icalendar import Calendar

from services.directory.api import app
from tests.services.directory.helpers import meeting
from tests.services.directory.test_pages import CROYDON_AA, CROYDON_SMART, add_meetings, result_names, text

pytestmark = pytest.mark.usefixtures("clean_state")
client = TestClient(app)

WINDERMERE = meeting(slug="windermere-aa", name="Windermere AA", fellowship="aa", day=2, time="19:30",
                     end_time="20:30", postcode=None, location="St Mary's Church Hall",
                     formatted_address="Church Street, Windermere", latitude=54.3806, longitude=-2.9066)
PENRITH = meeting(slug="penrith-na", name="Penrith NA", fellowship="na", day=3, time="19:00", postcode=None,
                  latitude=54.6641, longitude=-2.7521)


def further_names(page: str) -> list[str]:
    return re.findall(r'<h3 class="further"><a href="/meeting/[^"]+">([^<]+)</a></h3>', page)


def test_a_town_by_name_finds_its_meetings():
    add_meetings(WINDERMERE, PENRITH)
    response = client.get("/?near=kendal&distance=10")
    assert response.status_code == 200
    page = text(response.text)
    assert "1 meeting within 10 miles of Kendal" in page
    assert "Distances are from the centre of Kendal." in page
    assert result_names(response.text) == ["Windermere AA"]
    assert re.search(r"Town and village names: GeoNames ?, licensed under CC BY 4\.0", page)  # as its licence asks
    assert "ONS Postcode Directory" not in page  # credited only while it is loaded


def test_when_none_are_near_the_nearest_further_away_are_shown_with_their_distance():
    add_meetings(WINDERMERE, PENRITH)
    response = client.get("/?near=Kendal&distance=5")
    assert response.status_code == 200
    page = text(response.text)
    assert "No meetings found within 5 miles of Kendal" in page and "There are none within 5 miles." in page
    assert "The nearest meetings further away" in page
    assert result_names(response.text) == [] and further_names(response.text) == ["Windermere AA", "Penrith NA"]
    assert re.search(r"Windermere AA Alcoholics Anonymous · 7\.\d miles away", page)
    assert re.search(r"Penrith NA Narcotics Anonymous · 2\d\.\d miles away", page)


def test_a_name_several_places_share_is_asked_about():
    response = client.get("/?near=newport&fellowship=aa")
    assert response.status_code == 200
    page = text(response.text)
    assert "Which newport do you mean?" in page
    links = dict((label, url) for url, label in re.findall(r'<li><a href="([^"]+)">(Newport[^<]*)</a></li>',
                                                         response.text))
    assert "Newport, Wales" in links and "Newport, Isle of Wight" in links
    query = parse_qs(urlsplit(links["Newport, Isle of Wight"].replace("&amp;", "&")).query)
    assert query["near"] == ["Newport, Isle of Wight"] and query["fellowship"] == ["aa"]  # the rest of the search kept
    chosen = client.get("/?" + urlsplit(links["Newport, Isle of Wight"].replace("&amp;", "&")).query)
    assert "within 5 miles of Newport, Isle of Wight" in text(chosen.text)


def test_a_full_postcode_without_the_postcode_directory_says_it_is_placed_by_district():
    add_meetings(CROYDON_SMART)
    page = text(client.get("/?near=CR0+1AA").text)
    assert "Distances are from the middle of the CR0 postcode district, not from CR0 1AA itself" in page
    assert "postcode district" not in text(client.get("/?near=CR0").text)


def test_several_days_types_and_keywords_narrow_the_list():
    add_meetings(CROYDON_SMART, CROYDON_AA,
                 meeting(slug="women-thursday", name="Croydon Women's AA", fellowship="aa", day=4, time="10:00",
                         types=["W", "X"], notes="Step-free entrance from the car park"))
    assert sorted(result_names(client.get("/?near=CR0&day=tuesday&day=wednesday").text)) == [
        "Croydon Evening AA", "SMART Recovery Croydon"]
    assert result_names(client.get("/?near=CR0&type=W&type=X").text) == ["Croydon Women's AA"]
    assert result_names(client.get("/?near=CR0&q=car+park").text) == ["Croydon Women's AA"]
    form = client.get("/?near=CR0&type=W&day=thursday&q=car").text
    assert re.search(r'name="type" value="W" checked', form) and re.search(r'name="day" value="thursday" checked', form)
    assert 'value="car"' in form
    assert "Women only" in text(form) and "Wheelchair access" in text(form) and "LGBTQ+" in text(form)


def test_without_a_place_the_list_is_soonest_first():
    now = dt.datetime.now(dt.UTC)
    add_meetings(*[meeting(slug=f"day-{d}", name=f"Meeting {d}", day=d, time="12:00", end_time="13:00")
                   for d in range(7)])
    response = client.get("/?fellowship=smart")
    assert "soonest first" in text(response.text)
    names = result_names(response.text)
    assert len(names) == 7
    london = now.astimezone(ZoneInfo("Europe/London")).date()
    today = (london.weekday() + 1) % 7
    # Starting from today (or tomorrow, once today's has ended), the days follow in order.
    days = [int(n.split()[-1]) for n in names]
    assert days[0] in (today, (today + 1) % 7)
    assert days == [(days[0] + i) % 7 for i in range(7)]


def test_the_page_offers_use_my_location_from_a_script_file():
    page = client.get("/").text
    assert '<button type="button" id="use-location" class="link" hidden>Use my location</button>' in page
    assert '<script src="/static/find.js" defer></script>' in page and "<script>" not in page
    script = client.get("/static/find.js")
    assert script.status_code == 200 and "toFixed(2)" in script.text  # about 1 km, never the exact spot
    # What the script sends is understood.
    assert client.get("/?near=51.37,-0.07").status_code == 200


def test_a_meeting_can_be_added_to_a_calendar_and_has_directions():
    add_meetings(CROYDON_AA)
    page = client.get("/meeting/croydon-aa-evening").text
    assert 'href="/meeting/croydon-aa-evening.ics" download' in page
    assert 'href="https://www.google.com/maps/dir/?api=1&amp;destination=51.395%2C-0.1"' in page
    response = client.get("/meeting/croydon-aa-evening.ics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/calendar")
    assert 'filename="croydon-aa-evening.ics"' in response.headers["content-disposition"]
    calendar = Calendar.from_ical(response.content)
    event = calendar.walk("VEVENT")[0]
    assert str(event["summary"]) == "Croydon Evening AA"
    start = event.decoded("dtstart")
    assert start.tzinfo is not None and str(start.tzinfo) == "Europe/London"
    assert (start.weekday(), start.hour, start.minute) == (2, 19, 30)  # Wednesday 7:30pm, London time
    assert event.decoded("dtend") - start == dt.timedelta(minutes=90)
    assert event["rrule"]["FREQ"] == ["WEEKLY"] and event["rrule"]["BYDAY"] == ["WE"]
    assert "St Mary's Hall" in str(event["location"]) and "12 High Street" in str(event["location"])
    assert str(event["url"]).endswith("/meeting/croydon-aa-evening")
    assert calendar.walk("VTIMEZONE")  # so every calendar app shows it at the right time


def test_a_meeting_not_running_has_no_calendar_file():
    add_meetings(meeting(slug="by-appointment", day=None, time=None, end_time=None))
    assert client.get("/meeting/by-appointment.ics").status_code == 404
    assert client.get("/meeting/nothing-here.ics").status_code == 404
    assert ".ics" not in client.get("/meeting/by-appointment").text


def test_the_form_sorts_nearest_first_near_a_place_unless_asked_for_soonest():
    add_meetings(CROYDON_SMART, CROYDON_AA)
    assert '<option value="" selected>Nearest first' in client.get("/").text
    nearest = client.get("/?near=CR0&sort=&distance=5")  # as the form sends it
    assert "nearest first" in text(nearest.text) and result_names(nearest.text) == [
        "SMART Recovery Croydon", "Croydon Evening AA"]
    soonest = client.get("/?near=CR0&sort=soonest&distance=5")
    assert "soonest first" in text(soonest.text)
    assert '<option value="soonest" selected>' in soonest.text


def test_a_date_lists_that_days_meetings_with_that_date():
    add_meetings(CROYDON_SMART, CROYDON_AA)  # Tuesday 2pm, Wednesday 7:30pm
    today = dt.datetime.now(ZoneInfo("Europe/London")).date()
    tuesday = today + dt.timedelta(days=(1 - today.weekday()) % 7 + 7)  # a Tuesday next week or the week after
    response = client.get(f"/?near=CR0&date={tuesday.isoformat()}")
    assert response.status_code == 200
    assert result_names(response.text) == ["SMART Recovery Croydon"]
    assert f"Next meeting Tuesday {tuesday.day} {tuesday:%B}, 2:00pm" in text(response.text)
    assert f'value="{tuesday.isoformat()}"' in response.text
