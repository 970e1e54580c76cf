"""Find a meeting in a real browser, against the running stack and its demo meetings."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import screenshot
from tests.conftest import SERVICES, flush_redis, truncate_all
from tests.support.stack import Stack


@pytest.fixture(scope="module")
def stack():
    """The directory's API as a real process over the demo meetings: all these pages need.

    (Narrower than the conftest's whole stack, which would double the time of this module.)
    """
    for service in SERVICES:
        truncate_all(service)
    flush_redis()
    running = Stack().start(("directory-api",))
    from services.directory.seed import seed_demo

    seed_demo()
    yield running
    running.stop()


def test_someone_finds_a_smart_meeting_near_a_postcode_and_opens_it(stack, page):
    directory = stack.urls["directory"]
    refused: list[str] = []  # anything the Content-Security-Policy blocked (an inline style or script)
    page.on("console", lambda message: refused.append(message.text) if "Content Security Policy" in message.text else None)
    page.goto(f"{directory}/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Find a meeting")
    # The search panel is styled from the stylesheet, not an inline <style>.
    assert page.locator("form.search").evaluate("e => getComputedStyle(e).backgroundColor") != "rgba(0, 0, 0, 0)"
    page.get_by_label("Postcode or town").fill("CR0 1AA")
    page.get_by_label("Fellowship").select_option(label="SMART Recovery")
    page.get_by_role("button", name="Search").click()

    expect(page.get_by_role("heading", level=2, name=re.compile(r"1 meeting\s+within 5 miles of CR0 1AA"))).to_be_visible()
    results = page.locator(".results > li")
    expect(results).to_have_count(1)
    result = results.first
    expect(result.get_by_role("heading", level=3)).to_have_text("SMART Recovery Croydon")
    expect(result).to_contain_text("miles away")
    expect(result).to_contain_text(re.compile(r"Next meeting\s*Tuesday \d{1,2} \w+, 2:00pm"))
    expect(result).to_contain_text("Every Tuesday, 2:00pm to 3:30pm")
    expect(result).to_contain_text("Community Recovery Hub")
    # The address bar holds the search: it can be shared.
    assert "near=CR0+1AA" in page.url and "fellowship=smart" in page.url
    screenshot(page, "find-meeting")

    result.get_by_role("link", name="SMART Recovery Croydon").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("SMART Recovery Croydon")
    expect(page.get_by_role("heading", name="Next meetings")).to_be_visible()
    expect(page.locator("main ul li")).to_have_count(4)
    refer = page.get_by_role("link", name="Refer a client to this meeting")
    expect(refer).to_have_attribute("href", f"{stack.urls['referrals']}/desk/new?meeting=croydon-smart-2")
    screenshot(page, "meeting")

    page.get_by_role("link", name="Back to search results").click()
    expect(page.locator(".results > li")).to_have_count(1)
    expect(page.get_by_label("Postcode or town")).to_have_value("CR0 1AA")
    assert refused == []


def test_keyboard_only_search_and_open_a_result(stack, page):
    page.goto(f"{stack.urls['directory']}/")

    def tab_to(predicate_js: str, most: int = 60) -> None:
        for _ in range(most):
            page.keyboard.press("Tab")
            if page.evaluate(predicate_js):
                return
        raise AssertionError(f"Tab never reached: {predicate_js}")

    tab_to("document.activeElement.id === 'near'")
    # The focus can be seen.
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") == "solid"
    page.keyboard.type("CR0 1AA")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=2, name=re.compile(r"5 meetings\s+within 5 miles of CR0 1AA"))).to_be_visible()
    first_name = page.locator(".results > li h3").first.inner_text()

    tab_to("(document.activeElement.getAttribute('href') || '').startsWith('/meeting/')")
    assert page.evaluate("document.activeElement.textContent") == first_name
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text(first_name)


def test_an_unknown_postcode_is_explained_next_to_the_field(stack, page):
    page.goto(f"{stack.urls['directory']}/")
    page.get_by_label("Postcode or town").fill("ZZ9 9ZZ")
    response_status = []
    page.on("response", lambda r: response_status.append(r.status) if "near=" in r.url else None)
    page.get_by_role("button", name="Search").click()
    summary = page.locator("#error-summary")
    expect(summary).to_be_visible()
    expect(summary.get_by_role("heading")).to_have_text("There is a problem")
    message = "We could not find the postcode ZZ9 9ZZ. Check it, or enter just the first part, like CR0"
    expect(summary.get_by_role("link", name=message)).to_have_attribute("href", "#near")
    expect(page.locator("#near-error")).to_contain_text(message)
    field = page.get_by_label("Postcode or town")
    expect(field).to_have_attribute("aria-invalid", "true")
    expect(field).to_have_value("ZZ9 9ZZ")
    assert page.title().startswith("Error:")
    assert response_status == [422]


def test_online_meetings_and_the_phone_layout(stack, phone_page):
    page = phone_page
    page.goto(f"{stack.urls['directory']}/?near=CR0+1AA&attendance=online&fellowship=smart-family-friends")
    expect(page.locator(".results > li").first).to_be_visible()
    first = page.locator(".results > li").first
    expect(first.get_by_role("link", name=re.compile("Join the online meeting"))).to_have_attribute(
        "href", re.compile(r"^https://meet\.jit\.si/FAMA-demo-"))
    expect(first).to_contain_text("Passcode given by the facilitator")

    page.goto(f"{stack.urls['directory']}/?near=CR0+1AA")
    expect(page.locator(".results > li")).to_have_count(5)
    # Nothing wider than the phone's screen: no sideways scrolling.
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
    box = page.get_by_label("Postcode or town").bounding_box()
    assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390
    screenshot(page, "find-meeting-phone")


def test_a_town_by_name_a_shared_name_and_the_nearest_further_away(stack, page):
    directory = stack.urls["directory"]
    refused: list[str] = []
    page.on("console", lambda message: refused.append(message.text) if "Content Security Policy" in message.text else None)
    page.goto(f"{directory}/")
    # The browser may offer its location: the button is shown by the script file, not inline script.
    expect(page.get_by_role("button", name="Use my location")).to_be_visible()
    page.get_by_label("Postcode or town").fill("Keswick")
    page.get_by_label("Distance").select_option(label="Within 1 mile")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_role("heading", level=2, name=re.compile(r"No meetings found\s+within 1 mile of Keswick"))).to_be_visible()
    expect(page.get_by_role("heading", level=2, name="The nearest meetings further away")).to_be_visible()
    further = page.locator(".beyond > li")
    expect(further).to_have_count(3)
    for i in range(3):
        expect(further.nth(i)).to_contain_text(re.compile(r"1\d\.\d miles away"))
        expect(further.nth(i)).to_contain_text("Workington")
    screenshot(page, "find-nearest-further-away")

    page.get_by_label("Postcode or town").fill("Kendal")
    page.get_by_label("Distance").select_option(label="Within 5 miles")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_role("heading", level=2, name=re.compile(r"5 meetings\s+within 5 miles of Kendal"))).to_be_visible()
    expect(page.get_by_text("Distances are from the centre of Kendal.")).to_be_visible()

    page.get_by_label("Postcode or town").fill("Newport")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_role("heading", level=2, name="Which Newport do you mean?")).to_be_visible()
    page.get_by_role("link", name="Newport, Isle of Wight").click()
    expect(page.get_by_role("heading", level=2, name=re.compile(r"within 5 miles of Newport, Isle of Wight"))).to_be_visible()
    assert refused == []


def test_a_meeting_goes_into_a_calendar_and_has_directions(stack, page):
    page.goto(f"{stack.urls['directory']}/meeting/croydon-smart-2")
    expect(page.get_by_role("link", name=re.compile("Get directions"))).to_have_attribute(
        "href", re.compile(r"^https://www\.google\.com/maps/dir/\?api=1&destination=51\.37"))
    with page.expect_download() as info:
        page.get_by_role("link", name=re.compile("Add to calendar")).click()
    download = info.value
    assert download.suggested_filename == "croydon-smart-2.ics"
    body = open(download.path(), encoding="utf-8").read()
    assert body.startswith("BEGIN:VCALENDAR") and "SUMMARY:SMART Recovery Croydon" in body
    assert "RRULE:FREQ=WEEKLY;BYDAY=TU" in body and "DTSTART;TZID=Europe/London:" in body
    assert "BEGIN:VTIMEZONE" in body
    screenshot(page, "meeting-calendar-directions")
