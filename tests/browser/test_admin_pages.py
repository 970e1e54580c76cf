"""The admin pages in a real browser, on a desk and on a phone: a feed source added and uploaded,
its report, a held import discarded, a meeting changed with its history, a problem reported by a
visitor and resolved. Screenshots of each go to docs/screenshots/ for the README."""

from __future__ import annotations

import json
import re

import httpx
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import screenshot
from tests.conftest import SERVICES, flush_redis, truncate_all
from tests.services.directory.helpers import FEEDS
from tests.support.auth import token_for
from tests.support.stack import Stack

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def directory():
    for service in SERVICES:
        truncate_all(service)
    flush_redis()
    running = Stack().start(("directory-api",))
    from services.directory.seed import seed_demo

    seed_demo()
    yield running.urls["directory"]
    running.stop()


def sign_in(page, base: str, token: str, next_path: str) -> None:
    page.goto(f"{base}{next_path}")
    page.get_by_label("Access token").fill(token)
    page.get_by_role("button", name="Sign in").click()


def fits_the_screen(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


def test_an_admin_keeps_a_feed_and_a_meeting_up_to_date(directory, page, tmp_path):
    sign_in(page, directory, token_for("admin"), "/admin")
    expect(page.get_by_role("heading", level=1)).to_have_text("Administration")
    page.get_by_role("navigation", name="Administration").get_by_role("link", name="Feed sources").click()

    page.get_by_label("Source name").fill("atlanta")
    page.get_by_label("Timezone of meetings").fill("America/New_York")
    page.get_by_label("Re-import every").fill("")
    page.get_by_role("button", name="Add the source").click()
    expect(page).to_have_url(f"{directory}/admin/feeds/atlanta")

    rows = json.loads((FEEDS / "atlanta.json").read_text())
    rows.append({"slug": "broken", "name": "Broken", "day": 9, "time": "19:00"})
    feed = tmp_path / "atlanta.json"
    feed.write_text(json.dumps(rows))
    page.get_by_label("Upload a Meeting Guide file").set_input_files(str(feed))
    page.get_by_role("button", name="Import now").click()
    expect(page).to_have_url(re.compile(r"/admin/runs/\d+$"))
    expect(page.locator(".lead")).to_contain_text("Applied")
    expect(page.get_by_role("table")).to_contain_text("day 9 is out of range 0-6")
    screenshot(page, "admin-import-report")

    feed.write_text(json.dumps(rows[:1]))
    page.goto(f"{directory}/admin/feeds/atlanta")
    page.get_by_label("Upload a Meeting Guide file").set_input_files(str(feed))
    page.get_by_role("button", name="Import now").click()
    expect(page.get_by_role("heading", name="Check this import before it is applied")).to_be_visible()
    expect(page.locator("main")).to_contain_text("would withdraw 5 of the 6 live meetings")
    screenshot(page, "admin-import-held")
    page.get_by_role("button", name="Discard it: change nothing").click()
    expect(page.locator(".lead")).to_contain_text("Discarded by an admin")

    page.goto(f"{directory}/admin/meetings?q=atlanta")
    page.get_by_role("table").get_by_role("link").first.click()
    page.get_by_label("Starts (HH:MM)").fill("7:30pm")
    page.get_by_role("button", name="Save and publish").click()
    expect(page.locator(".error-summary")).to_contain_text("Enter a time like 19:30")
    expect(page.get_by_label("Starts (HH:MM)")).to_have_attribute("aria-invalid", "true")
    page.get_by_label("Starts (HH:MM)").fill("19:30")
    page.get_by_role("button", name="Save and publish").click()
    expect(page.locator(".notice.success")).to_have_text("Your changes are saved and published.")
    history = page.get_by_role("table")
    expect(history).to_contain_text("dev-user")
    expect(history).to_contain_text("Updated: time")
    expect(history).to_contain_text("feed:atlanta")
    screenshot(page, "admin-meeting")


def test_a_visitor_reports_a_problem_and_an_admin_resolves_it_on_a_phone(directory, phone_page):
    page = phone_page
    page.goto(f"{directory}/meeting/" + _first_slug(directory))
    page.get_by_role("link", name="Report a problem with this meeting").click()
    page.get_by_role("button", name="Send the report").click()
    expect(page.locator(".error-summary")).to_contain_text("Choose what is wrong")
    page.get_by_label("It no longer meets").check()
    page.get_by_label("What should it say?").fill("The hall is closed for repairs until March")
    page.get_by_role("button", name="Send the report").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Thank you")
    assert fits_the_screen(page)

    sign_in(page, directory, token_for("admin"), "/admin/problems")
    expect(page.locator("main")).to_contain_text("The hall is closed for repairs until March")
    assert fits_the_screen(page)
    screenshot(page, "admin-problems-phone")
    page.get_by_label("What you did (optional)").fill("Marked as not running until March")
    page.get_by_role("button", name="Mark resolved").click()
    expect(page.locator("main")).to_contain_text("No open problems reported.")
    page.goto(f"{directory}/admin/meetings")
    assert fits_the_screen(page)
    page.get_by_role("table").get_by_role("link").first.click()
    assert fits_the_screen(page)


def _first_slug(directory: str) -> str:
    return httpx.get(f"{directory}/meetings", params={"limit": 1}, timeout=10).json()["results"][0]["slug"]
