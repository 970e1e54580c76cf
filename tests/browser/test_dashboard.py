"""The commissioner's dashboard in a real browser: sign in, watch the counters move, download the CSV."""

from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path

import httpx
import jwt
import pytest
from playwright.sync_api import expect

from tests.browser.conftest import screenshot
from tests.conftest import SERVICES, flush_redis, truncate_all
from tests.services.directory.helpers import fix_rounding
from tests.support.auth import auth, token_for
from tests.support.processes import wait_for
from tests.support.stack import Stack


@pytest.fixture(scope="module")
def stack():
    """Directory and referrals as real processes (APIs, workers, schedulers) over the demo data.

    The events path the dashboard shows: referrals API -> outbox -> Redis -> directory worker ->
    counters. Notifications are left out: these referrals ask for no reminders.
    """
    for service in SERVICES:
        truncate_all(service)
    flush_redis()
    running = Stack().start(tuple(f"{s}-{r}" for s in ("directory", "referrals") for r in ("api", "worker", "scheduler")))
    from services.directory.seed import seed_demo

    seed_demo()
    yield running
    running.stop()


def sign_in(page, base: str, token: str, next_path: str = "/dashboard") -> None:
    page.goto(f"{base}{next_path}")
    expect(page).to_have_url(f"{base}/signin?next={next_path}")
    page.get_by_label("Access token").fill(token)
    page.get_by_role("button", name="Sign in").click()


def test_commissioner_sees_the_counters_move_and_downloads_the_csv(stack, page):
    directory, referrals = stack.urls["directory"], stack.urls["referrals"]
    sign_in(page, directory, token_for("commissioner", region="London"))
    expect(page.get_by_role("heading", level=1)).to_contain_text("Engagement dashboard")
    expect(page.get_by_role("heading", level=1)).to_contain_text("London region")
    croydon = page.locator("#sites-croydon-referrals_made")
    expect(croydon).to_have_text("0")
    expect(page.locator("#sites-sheffield-referrals_made")).to_have_count(0)  # another region

    # Keyworkers at Croydon refer clients through the referral desk's API.
    keyworker = auth("keyworker", "croydon")
    made: list[str] = []

    def refer() -> bool:
        response = httpx.post(f"{referrals}/referrals", headers=keyworker, timeout=10, json={
            "meeting_slug": "croydon-smart-2", "support": "accompanied_by_peer",
            "client_reference": f"CRY-{len(made) + 1:04d}", "reminder_detail": "discreet"})
        if response.status_code == 201:
            made.append(response.json()["id"])
        return response.status_code == 201

    # The first waits for the referrals service to have the demo meetings in its replica.
    wait_for(refer, timeout=30, interval=0.3, what="a first referral to be accepted")

    def shows(selector: str, value: str) -> None:
        def check() -> bool:
            fix_rounding(4)  # counters the worker made since: round them down, so the figures are known
            page.reload()
            return page.locator(selector).inner_text().strip() == value
        wait_for(check, timeout=30, interval=0.3, what=f"{selector} to show {value}")

    shows("#sites-croydon-referrals_made", "<5")  # one referral: not zero, but rounds to 0
    expect(page.locator("#suppression-note")).to_be_visible()
    for _ in range(4):
        assert refer()
    for referral_id in made[:3]:
        for stage in ("contact-arranged", "first-meeting-planned"):
            response = httpx.post(f"{referrals}/referrals/{referral_id}/transitions", headers=keyworker, timeout=10,
                                  json={"to": stage})
            assert response.status_code == 200, response.text
    shows("#sites-croydon-referrals_made", "5")
    shows("#sites-croydon-contact_arranged", "<5")
    expect(page.locator("#total-referrals_made")).to_have_text("5")
    expect(page.locator("#regions-london-referrals_made")).to_have_text("5")
    expect(page.locator("#chart-trend")).to_be_visible()
    expect(page.locator("#chart-funnel title").first).to_have_text("From referral to engagement, by site")
    screenshot(page, "dashboard")

    # The CSV link downloads the same figures, signed in by the cookie.
    with page.expect_download() as info:
        page.get_by_role("link", name="Download these figures as a spreadsheet (CSV)").click()
    download = info.value
    assert download.suggested_filename == "fama-engagement.csv"
    rows = list(csv.DictReader(io.StringIO(Path(download.path()).read_text("utf-8"))))
    croydon_rows = [r for r in rows if r["site_id"] == "croydon"]
    assert croydon_rows and all(r["region"] == "London" and r["fellowship"] == "smart" for r in croydon_rows)
    assert [r["referrals_made"] for r in croydon_rows] == ["5"]
    assert [r["contact_arranged"] for r in croydon_rows] == ["<5"]
    assert {r["site_id"] for r in rows} <= {"croydon"}  # only London's sites, and only Croydon has counts

    # The date filter narrows the page and the download alike.
    tomorrow = (dt.date.today() + dt.timedelta(days=8)).isoformat()
    page.get_by_label("From", exact=True).fill(tomorrow)
    page.get_by_role("button", name="Show figures").click()
    expect(page.locator("#total-referrals_made")).to_have_text("0")
    assert f"from={tomorrow}" in page.url
    expect(page.get_by_role("link", name="Download these figures as a spreadsheet (CSV)")).to_have_attribute(
        "href", f"/dashboard/engagement.csv?from={tomorrow}")


def test_a_wrong_token_is_refused_at_sign_in(stack, page):
    directory = stack.urls["directory"]
    forged = jwt.encode({"sub": "x", "role": "admin", "exp": dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)},
                        "not-the-secret-but-long-enough-for-hs256", algorithm="HS256")
    for token in ("not-a-token", forged):
        sign_in(page, directory, token)
        expect(page.locator("#token-error")).to_contain_text("That token was not accepted")
        expect(page.get_by_role("heading", level=1)).to_have_text("Sign in")
    page.goto(f"{directory}/dashboard")
    expect(page).to_have_url(f"{directory}/signin?next=/dashboard")  # no cookie was set
    # A keyworker is let in, but sees their own site only.
    sign_in(page, directory, token_for("keyworker", site="croydon"))
    expect(page.get_by_role("heading", level=1)).to_contain_text("Croydon")
    expect(page.locator("#sites-lambeth-referrals_made")).to_have_count(0)
