"""The directory's pages through the real app and the Postgres test database.

They check what a person reads on the page: the results and their wording, the error next
to the field, the links offered, who may see the dashboard and which numbers it shows.
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import re
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient

from services.directory import engagement, service
from services.directory.api import app
from services.directory.runtime import runtime
from services.directory.schemas import MeetingIn, SiteIn
from tests.services.directory.helpers import fix_rounding, meeting
from tests.support.auth import auth, token_for

pytestmark = pytest.mark.usefixtures("clean_state")
client = TestClient(app)
LONDON = ZoneInfo("Europe/London")
DESK = runtime.settings.referrals_public_url + "/desk"


def text(page: str) -> str:
    """The visible words of a page, tags and styles removed."""
    page = re.sub(r"<(style|script)\b.*?</\1>", " ", page, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page))).strip()


def by_id(page: str, element_id: str) -> str:
    match = re.search(rf'id="{re.escape(element_id)}"[^>]*>(.*?)</', page, flags=re.S)
    assert match, f"no element #{element_id}"
    return html.unescape(match.group(1)).strip()


def result_names(page: str) -> list[str]:
    return [html.unescape(n) for n in re.findall(r'<h3><a href="/meeting/[^"]+">([^<]+)</a></h3>', page)]


def add_meetings(*bodies: dict) -> None:
    with runtime.transaction() as session:
        for body in bodies:
            service.create_meeting(session, meeting_in=MeetingIn(**body))


def next_weekly(weekday: int, hour: int, minute: int = 0) -> dt.datetime:
    """The next local start of a weekly meeting (Python weekday: Monday = 0), worked out by hand."""
    now = dt.datetime.now(LONDON)
    for days in range(8):
        day = (now + dt.timedelta(days=days)).date()
        start = dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=LONDON)
        if day.weekday() == weekday and start > now:
            return start
    raise AssertionError


def spoken(start: dt.datetime) -> str:
    hour = start.hour % 12 or 12
    return f"{start:%A} {start.day} {start:%B}, {hour}:{start.minute:02d}{'am' if start.hour < 12 else 'pm'}"


CROYDON_SMART = meeting()  # Tuesday 14:00-15:30, CR0, Open + Discussion
CROYDON_AA = meeting(slug="croydon-aa-evening", name="Croydon Evening AA", fellowship="aa", day=3, time="19:30",
                     end_time="21:00", types=["C", "B"], location="St Mary's Hall",
                     formatted_address="St Mary's Hall, 12 High Street, Croydon, CR0 1AB",
                     latitude=51.395, longitude=-0.10)
SHEFFIELD_SMART = meeting(slug="sheffield-smart", name="SMART Recovery Sheffield", postcode="S1 2AB",
                          latitude=53.38, longitude=-1.47)
ONLINE_NA = meeting(slug="na-online", name="NA Online Lunchtime", fellowship="na", day=5, time="12:30",
                    end_time="13:30", attendance_option="online", location=None, postcode=None, latitude=None,
                    longitude=None, conference_url="https://meet.example.org/na-lunch",
                    conference_url_notes="Meeting ID 123 456", conference_phone="0330 088 5830",
                    conference_phone_notes="Passcode 7788")


# --- find a meeting ---------------------------------------------------------------------

def test_search_near_a_postcode_lists_nearby_meetings_nearest_first_in_plain_english():
    add_meetings(CROYDON_SMART, CROYDON_AA, SHEFFIELD_SMART)
    response = client.get("/?near=cr0+1aa&distance=5")
    assert response.status_code == 200
    page = text(response.text)
    assert "2 meetings within 5 miles of CR0 1AA" in page
    assert result_names(response.text) == ["SMART Recovery Croydon", "Croydon Evening AA"]
    assert "SMART Recovery Sheffield" not in page
    # The nearest: distance in miles, fellowship in words, the next date and time in local time.
    first = page[page.index("SMART Recovery Croydon SMART Recovery"):page.index("Croydon Evening AA")]
    assert "SMART Recovery · less than 0.1 miles away" in first
    assert f"Next meeting {spoken(next_weekly(1, 14))}" in first
    assert "Every Tuesday, 2:00pm to 3:30pm" in first
    assert "How to attend In person" in first
    assert "Community Recovery Hub" in first
    assert "Open: anyone may go" in first and "Discussion" in first
    assert "Joining online" not in first
    aa = page[page.index("Croydon Evening AA"):]
    assert re.search(r"Alcoholics Anonymous · 1\.\d miles away", aa)
    assert "Every Wednesday, 7:30pm to 9:00pm" in aa
    assert "St Mary's Hall 12 High Street, Croydon, CR0 1AB" in aa  # the venue once, then the address
    assert "Closed: only for people who want to recover themselves" in aa and "Big Book" in aa
    # The query string is the whole state: the form shows it back.
    assert 'value="CR0 1AA"' in response.text
    assert '<option value="5" selected>' in response.text


def test_filters_narrow_the_results():
    add_meetings(CROYDON_SMART, CROYDON_AA)
    assert result_names(client.get("/?near=CR0&fellowship=smart").text) == ["SMART Recovery Croydon"]
    assert result_names(client.get("/?near=CR0&day=wednesday").text) == ["Croydon Evening AA"]
    assert result_names(client.get("/?near=CR0&time=evening").text) == ["Croydon Evening AA"]
    assert result_names(client.get("/?near=CR0&time=afternoon").text) == ["SMART Recovery Croydon"]
    assert result_names(client.get("/?near=CR0&from=1pm&to=15:00").text) == ["SMART Recovery Croydon"]
    assert result_names(client.get("/?near=CR0&distance=1").text) == ["SMART Recovery Croydon"]  # AA is ~2 miles away
    none = client.get("/?near=CR0&day=sunday")
    assert none.status_code == 200 and "No meetings found within 5 miles of CR0" in text(none.text)


def test_online_meetings_show_how_to_join():
    add_meetings(CROYDON_SMART, ONLINE_NA, meeting(slug="hybrid-ca", name="Croydon CA Hybrid", fellowship="ca",
                                                   attendance_option="hybrid", conference_url="https://meet.example.org/ca"))
    response = client.get("/?near=CR0+1AA&attendance=online")
    assert response.status_code == 200
    page = text(response.text)
    assert sorted(result_names(response.text)) == ["Croydon CA Hybrid", "NA Online Lunchtime"]  # soonest first
    assert "not sorted by distance from CR0 1AA" in page
    online = page[page.index("NA Online Lunchtime"):]
    assert "How to attend Online" in online and "Where" not in online.split("Joining online")[0]
    assert "Join the online meeting" in online and "Meeting ID 123 456" in online
    assert "By phone: 0330 088 5830" in online and "Passcode 7788" in online
    assert 'href="https://meet.example.org/na-lunch"' in response.text
    assert 'href="tel:03300885830"' in response.text
    assert "How to attend In person and online" in page
    # A search near a place offers the online meetings too, which are not near anything.
    nearby = client.get("/?near=CR0+1AA")
    assert "NA Online Lunchtime" not in result_names(nearby.text)
    assert 'href="/?attendance=online"' in nearby.text


@pytest.mark.parametrize(("query", "field", "message"), [
    ("near=ZZ9+9ZZ", "near", "We could not find the postcode ZZ9 9ZZ. Check it, or enter just the first part, like CR0"),
    ("near=not+a+place", "near", "We could not find a town, village or city called not a place in the UK"),
    ("near=%F0%9F%98%80", "near", "Enter a UK postcode, like CR0 1AA, or a town, like Kendal"),
    ("near=CR0&q=%F0%9F%98%80", "q", "Enter words or numbers to search for"),
    ("near=CR0&q=" + "a" * 500, "q", "Enter 80 characters or fewer"),
    ("near=CR0&type=ZZ", "type", "Choose the type of meeting from the list"),
    ("near=CR0&date=2026-02-30", "date", "Enter a real date, like 2026-12-24"),
    ("near=CR0&date=2020-01-01", "date", "That date has passed"),
    ("near=CR0&date=2099-01-01&day=monday", "date", "Choose days of the week or a date, not both"),
    ("near=CR0&sort=random", "sort", "Choose nearest first or soonest first"),
    ("near=CR0&distance=7", "distance", "Choose a distance from the list"),
    ("near=CR0&day=funday", "day", "Choose a day from the list"),
    ("near=CR0&from=25:00", "from", "Enter the start of the time range as a time, like 18:00 or 6pm"),
    ("near=CR0&from=20:00&to=18:00", "to", "The end of the time range must be later than its start"),
    ("near=CR0&time=morning&from=18:00", "time", "No time is both in that time of day and in the time range"),
    ("fellowship=xyz", "fellowship", "Choose a fellowship from the list"),
])
def test_bad_values_are_explained_in_the_summary_and_next_to_the_field(query, field, message):
    add_meetings(CROYDON_SMART)
    response = client.get(f"/?{query}")
    assert response.status_code == 422
    page = response.text
    assert "<title>Error: Find a meeting – FAMA</title>" in page
    summary = page[page.index('id="error-summary"'):page.index("</div>", page.index('id="error-summary"'))]
    assert f'href="#{field}"' in summary and message in html.unescape(summary)
    # The same message beside the field, which points at it.
    beside = re.search(rf'<p class="field-error" id="{field}-error">(.*?)</p>', page, flags=re.S)
    assert beside and text(beside.group(1)).startswith(f"Error: {message}")
    control = re.search(rf'<(input|select|fieldset)[^>]*id="{field}"[^>]*>', page).group(0)
    assert f"{field}-error" in control and 'aria-invalid="true"' in control
    assert not result_names(page)  # no results from a search that was not understood
    if field == "near":  # what was typed is kept, to correct it
        typed = parse_qs(query)["near"][0]
        assert re.search(rf'id="near" name="near" value="{re.escape(typed)}"', page, flags=re.I)


def test_results_are_paged_with_shareable_links():
    add_meetings(*[meeting(slug=f"croydon-{i:02d}", name=f"Croydon Meeting {i:02d}", latitude=51.372 + i * 0.001)
                   for i in range(12)])
    first = client.get("/?near=CR0+1AA&distance=2&fellowship=smart")
    assert result_names(first.text) == [f"Croydon Meeting {i:02d}" for i in range(10)]
    assert "Showing 1 to 10 of 12" in text(first.text) and "Page 1 of 2" in text(first.text)
    next_url = html.unescape(re.search(r'<a href="([^"]+)" rel="next"', first.text).group(1))
    assert parse_qs(urlsplit(next_url).query) == {"near": ["CR0 1AA"], "distance": ["2"], "fellowship": ["smart"],
                                                  "page": ["2"]}
    second = client.get(next_url)
    assert result_names(second.text) == ["Croydon Meeting 10", "Croydon Meeting 11"]
    assert 'rel="prev"' in second.text and 'rel="next"' not in second.text
    # A page past the end shows the last one.
    assert result_names(client.get("/?near=CR0+1AA&distance=2&fellowship=smart&page=9").text)[-1] == "Croydon Meeting 11"


def test_first_visit_shows_the_form_only_and_the_search_is_fast_enough():
    add_meetings(CROYDON_SMART)
    first = client.get("/")
    assert first.status_code == 200 and "<h1>Find a meeting</h1>" in first.text and not result_names(first.text)
    assert '<label for="near">Postcode or town</label>' in first.text
    started = dt.datetime.now()
    for _ in range(10):
        assert client.get("/?near=CR0+1AA").status_code == 200
    assert (dt.datetime.now() - started) / 10 < dt.timedelta(milliseconds=300)


# --- a meeting's page ---------------------------------------------------------------------

def test_meeting_page_shows_everything_and_offers_a_referral():
    add_meetings(meeting(notes="Ring the bell at the side door", location_notes="Behind the library",
                         group="Croydon SMART group", website="https://smart.example.org", booking_required=True,
                         facilitator_contact="+447700900123"))
    response = client.get("/meeting/croydon-smart-tuesday")
    assert response.status_code == 200
    page = text(response.text)
    assert "<h1>SMART Recovery Croydon</h1>" in response.text
    start = next_weekly(1, 14)
    expected = [spoken(start + dt.timedelta(weeks=w)) for w in range(4)]
    assert "Next meetings " + " ".join(expected) in page
    for words in ("Every Tuesday, 2:00pm to 3:30pm", "Community Recovery Hub", "Ring the bell at the side door",
                  "Behind the library", "Croydon SMART group", "You need to book a place before you go"):
        assert words in page
    assert "+447700900123" not in response.text  # the facilitator's contact is not public
    assert f'href="{DESK}/new?meeting=croydon-smart-tuesday"' in response.text
    assert "Refer a client to this meeting" in page
    assert "openstreetmap.org/?mlat=51.372&amp;mlon=-0.074" in response.text


def test_meeting_page_back_link_returns_to_the_same_results_only():
    add_meetings(CROYDON_SMART)
    results = client.get("/?near=CR0+1AA&fellowship=smart")
    link = html.unescape(re.search(r'<h3><a href="([^"]+)">', results.text).group(1))
    back = re.search(r'<a href="([^"]+)">Back to search results</a>', client.get(link).text).group(1)
    assert parse_qs(urlsplit(html.unescape(back)).query) == {"near": ["CR0 1AA"], "fellowship": ["smart"],
                                                             "distance": ["5"]}
    evil = client.get("/meeting/croydon-smart-tuesday?back=javascript:alert(1)")
    assert '<a href="/">Back to find a meeting</a>' in evil.text and "javascript" not in evil.text


def test_withdrawn_and_unknown_meetings():
    add_meetings(CROYDON_SMART)
    with runtime.transaction() as session:
        service.withdraw_meeting(session, slug="croydon-smart-tuesday", reason="The hall has closed.")
    gone = client.get("/meeting/croydon-smart-tuesday")
    assert gone.status_code == 200
    assert "This meeting is no longer running. The hall has closed." in text(gone.text)
    assert "Refer a client" not in gone.text and "Next meetings" not in gone.text
    missing = client.get("/meeting/no-such-meeting")
    assert missing.status_code == 404 and "Meeting not found" in missing.text


# --- the dashboard -----------------------------------------------------------------------

MONDAY = dt.datetime(2026, 11, 16, 10, 0, tzinfo=dt.UTC)  # ISO week 2026-W47


@pytest.fixture
def sites():
    with runtime.transaction() as session:
        for site_id, name, region in (("croydon", "Croydon", "London"), ("lambeth", "Lambeth", "London"),
                                      ("sheffield", "Sheffield", "Yorkshire and the Humber")):
            service.create_site(session, site_in=SiteIn(id=site_id, name=name, host_agency=f"{name} CGL", region=region))


def count(metric: str, n: int, *, site: str = "croydon", fellowship: str = "aa", at: dt.datetime = MONDAY) -> None:
    """n facts of one metric, as the event handlers count them."""
    with runtime.transaction() as session:
        for i in range(n):
            engagement.count_facts(session, subject=f"{site}-{metric}-{fellowship}-{at.date()}-{i}", metrics=[metric],
                                   site_id=site, fellowship=fellowship, occurred_at=at)


def dashboard(role: str, site=None, region=None, query: str = ""):
    return client.get(f"/dashboard{query}", headers=auth(role, site, region), follow_redirects=False)


def test_dashboard_needs_sign_in_and_the_right_role(sites):
    anonymous = client.get("/dashboard?from=2026-11-01", follow_redirects=False)
    assert anonymous.status_code == 303
    assert anonymous.headers["location"] == "/signin?next=/dashboard%3Ffrom%3D2026-11-01"
    no_region = dashboard("commissioner")
    assert no_region.status_code == 403 and "does not name a region" in text(no_region.text)
    no_site = dashboard("keyworker")
    assert no_site.status_code == 403 and "does not name a site" in text(no_site.text)
    for path in ("/dashboard/engagement.csv",):
        assert client.get(path, follow_redirects=False).status_code == 303


def test_each_role_sees_its_own_scope(sites):
    count("referrals_made", 6, site="croydon")
    count("referrals_made", 7, site="lambeth")
    count("referrals_made", 8, site="sheffield")
    fix_rounding(2)  # to the nearest 5
    london = dashboard("commissioner", region="London")
    assert london.status_code == 200
    assert "London region" in text(london.text)
    assert by_id(london.text, "sites-croydon-referrals_made") == "5"
    assert by_id(london.text, "sites-lambeth-referrals_made") == "5"
    assert by_id(london.text, "regions-london-referrals_made") == "10"
    assert by_id(london.text, "total-referrals_made") == "10"
    assert "Sheffield" not in text(london.text)
    keyworker = dashboard("keyworker", site="croydon")
    assert keyworker.status_code == 200
    assert by_id(keyworker.text, "total-referrals_made") == "6"
    assert "Lambeth" not in text(keyworker.text) and "sites-lambeth" not in keyworker.text
    admin = dashboard("admin")
    assert by_id(admin.text, "total-referrals_made") == "21"
    assert by_id(admin.text, "regions-yorkshire-and-the-humber-referrals_made") == "8"
    only_yorkshire = dashboard("admin", query="?region=Yorkshire+and+the+Humber")
    assert by_id(only_yorkshire.text, "total-referrals_made") == "8" and "sites-croydon" not in only_yorkshire.text
    # A commissioner cannot widen their scope with the admin's region filter.
    widened = dashboard("commissioner", region="London", query="?region=Yorkshire+and+the+Humber")
    assert by_id(widened.text, "total-referrals_made") == "10" and "Sheffield" not in text(widened.text)


def test_small_numbers_are_suppressed_for_commissioners_everywhere_on_the_page(sites):
    count("referrals_made", 3, site="croydon", fellowship="smart")
    count("first_meeting_attended", 2, site="croydon", fellowship="smart")
    count("referrals_made", 9, site="lambeth", fellowship="aa")
    count("opted_out", 1, site="lambeth", fellowship="aa")
    fix_rounding(4)  # never up: 1-4 show as "<5", 9 as 5
    page = dashboard("commissioner", region="London").text
    assert "every figure is rounded to a multiple of 5" in text(page)
    assert "a figure that is not zero but rounds to 0 is shown as <5" in text(page)
    assert by_id(page, "sites-croydon-referrals_made") == "<5"
    assert by_id(page, "sites-croydon-first_meeting_attended") == "<5"
    assert by_id(page, "sites-lambeth-referrals_made") == "5"
    assert by_id(page, "sites-lambeth-opted_out") == "<5"
    assert by_id(page, "sites-croydon-followed_up") == "0"  # zero is not identifying
    # The total is the sum of the rounded figures: 12 - 9 would give Croydon away.
    assert by_id(page, "total-referrals_made") == "5"
    # The charts tell no more than the tables: no 3 or 2 drawn for Croydon or SMART.
    mix = page[page.index('id="chart-mix"'):page.index("</svg>", page.index('id="chart-mix"'))]
    assert "SMART Recovery, Referrals: &lt;5" in mix and ">3<" not in mix
    funnel = page[page.index('id="chart-funnel"'):page.index("</svg>", page.index('id="chart-funnel"'))]
    assert "Croydon, Referred: &lt;5" in funnel and "Croydon, Attended: &lt;5" in funnel
    assert ">2<" not in funnel and ">3<" not in funnel
    # Site staff see their own exact numbers.
    own = dashboard("site_lead", site="croydon").text
    assert by_id(own, "sites-croydon-referrals_made") == "3" and "&lt;5" not in own


def test_charts_have_text_alternatives_and_the_data_as_tables(sites):
    count("referrals_made", 6, site="croydon", fellowship="smart")
    count("referrals_made", 5, site="croydon", fellowship="aa", at=MONDAY + dt.timedelta(weeks=2))
    fix_rounding(4)  # 6 shows as 5
    page = dashboard("commissioner", region="London", query="?from=2026-11-09&to=2026-12-06").text
    for chart_id, title in (("chart-trend", "Referrals each week"), ("chart-funnel", "From referral to engagement, by site"),
                            ("chart-mix", "Referrals by fellowship")):
        svg = re.search(rf'<svg[^>]*id="{chart_id}"[^>]*>', page).group(0)
        assert 'role="img"' in svg and f'aria-labelledby="{chart_id}-title"' in svg
        assert f'aria-describedby="{chart_id}-desc"' in svg
        assert by_id(page, f"{chart_id}-title") == title
        assert by_id(page, f"{chart_id}-desc")
    # Four weeks in the period, empty ones included, with their numbers in a table.
    words = text(page)
    for week, n in (("9 November 2026", 0), ("16 November 2026", 5), ("23 November 2026", 0), ("30 November 2026", 5)):
        assert f"{week} {n} " in words
    assert "Week starting 16 Nov: 5" in page
    assert '<th scope="row">SMART Recovery</th><td class="num">5</td>' in page
    assert '<th scope="row">Alcoholics Anonymous</th><td class="num">5</td>' in page
    assert by_id(page, "total-referrals_made") == "10"


def test_date_range_and_fellowship_filters(sites):
    count("referrals_made", 6, site="croydon", fellowship="smart")
    count("referrals_made", 7, site="croydon", fellowship="aa")
    count("referrals_made", 8, site="croydon", fellowship="aa", at=MONDAY + dt.timedelta(weeks=3))
    fix_rounding(2)  # to the nearest 5: 6 and 7 show as 5, 8 as 10

    def total(query: str) -> str:
        return by_id(dashboard("commissioner", region="London", query=query).text, "total-referrals_made")
    assert total("") == "20"
    assert total("?fellowship=aa") == "15"
    assert total("?to=2026-11-22") == "10"
    assert total("?from=2026-11-30&fellowship=aa") == "10"
    assert total("?from=16/11/2026&to=22/11/2026&fellowship=smart") == "5"
    assert by_id(dashboard("admin", query="?fellowship=aa").text, "total-referrals_made") == "15"  # exact: 7 + 8
    bad = dashboard("commissioner", region="London", query="?from=2026-13-45&to=2026-11-01")
    assert bad.status_code == 422
    assert "Enter the start date as a real date, like 16/11/2026" in by_id(bad.text, "from-error") + text(bad.text)
    assert 'href="#from"' in bad.text and 'id="from-error"' in bad.text
    assert "total-referrals_made" not in bad.text
    backwards = dashboard("commissioner", region="London", query="?from=2026-12-01&to=2026-11-01")
    assert backwards.status_code == 422 and "The end date must be the same as or after the start date" in text(backwards.text)
    unknown = dashboard("commissioner", region="London", query="?fellowship=nope")
    assert unknown.status_code == 422 and 'id="fellowship-error"' in unknown.text


def test_csv_download_from_the_dashboard_link_with_the_sign_in_cookie(sites):
    count("referrals_made", 3, site="croydon", fellowship="smart")
    count("referrals_made", 6, site="lambeth", fellowship="aa")
    count("referrals_made", 5, site="sheffield", fellowship="aa")
    fix_rounding(4)
    browser = TestClient(app)
    form_token = re.search(r'name="csrf_token" value="([0-9a-f]+)"', browser.get("/signin").text).group(1)
    signed_in = browser.post("/signin", data={"token": token_for("commissioner", region="London"), "csrf_token": form_token,
                                              "next": "/dashboard?fellowship=&from=2026-11-01"}, follow_redirects=False)
    assert signed_in.status_code == 303 and "HttpOnly" in signed_in.headers["set-cookie"]
    page = browser.get(signed_in.headers["location"])
    assert page.status_code == 200 and "Signed in as commissioner" in text(page.text)
    link = html.unescape(re.search(r'<a href="([^"]+)" download>Download these figures', page.text).group(1))
    assert link == "/dashboard/engagement.csv?from=2026-11-01"
    download = browser.get(link)
    assert download.status_code == 200
    assert download.headers["content-type"].startswith("text/csv")
    assert 'attachment; filename="fama-engagement-2026-11-01.csv"' == download.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(download.text)))
    assert {(r["site"], r["region"], r["fellowship"], r["referrals_made"]) for r in rows} == {
        ("Croydon", "London", "smart", "<5"), ("Lambeth", "London", "aa", "5")}
    assert all(r["week"] == "2026-W47" and r["week_start"] == "2026-11-16" for r in rows)
    # Filters a commissioner cannot use do not widen the download; a stranger gets nothing.
    assert "sheffield" not in browser.get("/dashboard/engagement.csv?region=Yorkshire+and+the+Humber").text
    stranger = TestClient(app).get(link, follow_redirects=False)
    assert stranger.status_code == 303 and stranger.headers["location"].startswith("/signin?next=")
    # Bad filters are refused with what was wrong.
    bad = browser.get("/dashboard/engagement.csv?to=yesterday")
    assert bad.status_code == 422 and "end date" in bad.text


def test_dashboard_with_no_counts_yet(sites):
    page = dashboard("commissioner", region="London").text
    assert by_id(page, "total-referrals_made") == "0"
    assert by_id(page, "sites-croydon-referrals_made") == "0" and by_id(page, "sites-lambeth-referrals_made") == "0"
    assert "No referrals in this period." in text(page)
