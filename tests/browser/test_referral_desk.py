"""The keyworker's referral desk in a real browser, against every service running for real.

A keyworker signs in with a token, refers a client to a seeded Croydon meeting with a mobile
and consent, sees the reminders the notifications service planned (they reach the desk only
as events), moves the referral on, and finds it in the list; the pages also fit a phone.
"""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from services.referrals import service
from services.referrals.models import Referral, meeting_replica
from services.referrals.runtime import runtime
from services.referrals.schemas import ReferralIn
from tests.browser.conftest import screenshot
from tests.support.auth import token_for
from tests.support.processes import wait_for

pytestmark = pytest.mark.browser

MEETING = "croydon-smart-2"  # SMART Recovery Croydon, Tuesdays 2:00pm (services/directory/seed.py)


def in_replica(slug: str) -> bool:
    with runtime.sessions() as session:
        return session.execute(select(meeting_replica.c.slug).where(meeting_replica.c.slug == slug)).first() is not None


def sign_in(page, token: str) -> None:
    page.fill("#token", token)
    page.get_by_role("button", name="Sign in").click()


def csp_violations(page) -> list[str]:
    """Console reports of anything the Content-Security-Policy refused (an inline style or script)."""
    seen: list[str] = []
    page.on("console", lambda message: seen.append(message.text) if "Content Security Policy" in message.text else None)
    return seen


def test_keyworker_refers_a_client_and_sees_the_reminders_planned(stack, page, phone_page):
    desk = stack.urls["referrals"]
    refused = csp_violations(page)
    wait_for(lambda: in_replica(MEETING), timeout=30, what="the seeded meetings to reach the referrals replica")

    # Arriving from the directory's "Refer a client" link, not yet signed in.
    page.goto(f"{desk}/desk/new?meeting={MEETING}")
    assert page.url.startswith(f"{desk}/signin?next=")
    sign_in(page, token_for("keyworker", "croydon")[:-6] + "AAAAAA")
    assert page.get_by_role("heading", name="There is a problem").is_visible()
    assert "That token was not accepted" in page.locator("#token-error").inner_text()

    sign_in(page, token_for("keyworker", "croydon"))
    assert page.url == f"{desk}/desk/new?meeting={MEETING}"
    assert "SMART Recovery Croydon" in page.locator("#meeting-chosen").inner_text()
    assert page.input_value("#planned_date")  # the next meeting, filled in
    # The page's own styles come from the stylesheet (no inline style is allowed).
    assert page.locator("#consent-wording").evaluate("e => getComputedStyle(e).borderLeftStyle") == "solid"
    page.get_by_label("Client reference").fill("CRY-0107")
    page.get_by_label("A peer supporter will go with the client").check()
    page.get_by_label("Mobile number (optional)").fill("07812 345678")
    screenshot(page, "desk-new-referral")

    # Forgot the consent box: the error is next to it, and what was typed is kept.
    page.get_by_role("button", name="Record referral").click()
    error = page.locator("#consent-error")
    assert "Tick to confirm the client agreed to reminders" in error.inner_text()
    assert page.input_value("#mobile") == "07812 345678" and page.input_value("#client_reference") == "CRY-0107"
    page.locator("#error-summary a").first.click()  # the summary link takes the keyboard to the field
    assert page.evaluate("document.activeElement.id") == "consent"
    screenshot(page, "desk-new-referral-errors")

    page.get_by_label("The client heard this wording and agrees to reminders").check()
    page.get_by_role("button", name="Record referral").click()
    assert re.search(r"/desk/referrals/[0-9a-f-]{36}\?notice=created$", page.url)
    assert page.get_by_role("status").inner_text() == "Referral recorded."
    assert page.locator("#stage").inner_text() == "Information given"
    referral_url = page.url.split("?")[0]

    # Notifications plans the reminders from referral.created; they come back as reminder.scheduled.
    def reminders_shown() -> bool:
        page.reload()
        return page.locator("#reminders-table tbody tr").count() >= 2

    wait_for(reminders_shown, timeout=30, interval=1.0, what="the planned reminders on the referral page")
    reminders = page.locator("#reminders-table").inner_text()
    assert "The day before" in reminders and "Text message" in reminders and "Planned" in reminders
    assert re.search(r"(Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday) \d{1,2} \w+ \d{4}, \d{1,2}:\d\d[ap]m",
                     reminders)
    screenshot(page, "desk-referral")

    # Move it along: contact arranged (a peer will go with the client).
    assert page.get_by_role("button", name="Mark first meeting attended").count() == 0
    page.get_by_role("button", name="Mark contact arranged").click()
    assert page.get_by_role("status").inner_text() == "Stage changed."
    assert page.locator("#stage").inner_text() == "Contact arranged"
    assert "Information given → Contact arranged" in page.locator("#history-table").inner_text()
    with runtime.sessions() as session:
        stored = session.scalars(select(Referral).where(Referral.client_reference == "CRY-0107")).one()
    assert stored.business_status == "contact-arranged" and stored.mobile == "+447812345678"

    page.get_by_role("link", name="Back to referrals").click()
    row = page.locator("tr", has_text="CRY-0107")
    assert "SMART Recovery Croydon" in row.inner_text() and "Contact arranged" in row.inner_text()
    assert "planned" in row.inner_text()
    page.select_option("#stage", "contact-arranged")
    page.get_by_role("button", name="Show referrals").click()
    assert "stage=contact-arranged" in page.url and page.locator("tr", has_text="CRY-0107").count() == 1
    screenshot(page, "desk-list")

    # On a phone: the pages fit the screen, with nothing to scroll sideways.
    phone_page.goto(referral_url)
    sign_in(phone_page, token_for("keyworker", "croydon"))
    assert phone_page.locator("#stage").inner_text() == "Contact arranged"
    assert phone_page.evaluate("document.documentElement.scrollWidth") <= 390
    phone_page.get_by_role("link", name="Back to referrals").click()
    assert phone_page.locator("tr", has_text="CRY-0107").is_visible()
    assert phone_page.evaluate("document.documentElement.scrollWidth") <= 390
    screenshot(phone_page, "desk-phone")
    assert refused == []

    # Signing out is a button (a POST with the form token).
    page.get_by_role("button", name="Sign out").click()
    assert page.url == f"{desk}/signin"
    page.goto(f"{desk}/desk")
    assert page.url.startswith(f"{desk}/signin?next=")


def test_a_form_on_another_origin_cannot_act_for_the_signed_in_keyworker(stack, page):
    """The review's attack: a page on a same-site neighbour (here the directory's origin, another port)
    posts a desk form; the browser sends the keyworker's cookie, and the desk refuses it."""
    desk, directory = stack.urls["referrals"], stack.urls["directory"]
    wait_for(lambda: in_replica(MEETING), timeout=30, what="the seeded meetings to reach the referrals replica")
    with runtime.transaction() as session:
        referral = service.create_referral(session, referral_in=ReferralIn(
            meeting_slug=MEETING, client_reference="CRY-0666", mobile="07812 345678",
            consent={"to_reminders": True, "wording_version": service.CURRENT_CONSENT_WORDING}), site_id="croydon", by="kw-1")
        referral_id = referral.id
    page.goto(f"{desk}/desk")
    sign_in(page, token_for("keyworker", "croydon"))
    assert "CRY-0666" in page.locator("table").inner_text()

    evil = f"{directory}/prize"
    page.route(evil, lambda route: route.fulfill(status=200, content_type="text/html", body=(
        f'<form method="post" action="{desk}/desk/referrals/{referral_id}/consent-withdrawal">'
        '<button>Claim your prize</button></form>')))
    page.goto(evil)
    page.get_by_role("button", name="Claim your prize").click()
    assert page.get_by_role("heading", level=1).inner_text() == "This form could not be sent"
    assert "reload the page and try again" in page.locator("main").inner_text()
    with runtime.sessions() as session:
        stored = session.get(Referral, referral_id)
        assert stored.mobile == "+447812345678" and stored.consent_withdrawn_at is None


def test_keyworker_downloads_the_planned_session_for_the_clients_calendar(stack, page):
    """From the referral page: the planned session as an .ics, discreet (the client chose no detail)."""
    from icalendar import Calendar

    desk = stack.urls["referrals"]
    wait_for(lambda: in_replica(MEETING), timeout=30, what="the seeded meetings to reach the referrals replica")
    with runtime.transaction() as session:
        referral = service.create_referral(session, referral_in=ReferralIn(
            meeting_slug=MEETING, client_reference="CRY-0808", mobile="07812 345678",
            consent={"to_reminders": True, "wording_version": service.CURRENT_CONSENT_WORDING}), site_id="croydon",
            by="kw-1")
        referral_id, planned = referral.id, referral.planned_date
    page.goto(f"{desk}/desk/referrals/{referral_id}")
    sign_in(page, token_for("keyworker", "croydon"))
    link = page.get_by_role("link", name="Add the planned session to a calendar (.ics)")
    assert "Discreet" in page.locator("#session-calendar-hint").inner_text()
    with page.expect_download() as info:
        link.click()
    download = info.value
    assert download.suggested_filename == f"meeting-{planned.isoformat()}.ics"
    body = open(download.path(), encoding="utf-8").read()
    assert "CRY-0808" not in body and "7812345678" not in body and "SMART" not in body and "Recovery" not in body
    event = Calendar.from_ical(body).walk("VEVENT")[0]
    assert str(event["summary"]) == "Your meeting"
    start = event["dtstart"]
    assert start.params["TZID"] == "Europe/London" and start.dt.date() == planned and start.dt.hour == 14
    # The venue ("Community Recovery Hub") gives the meeting away: the street, town and postcode stay.
    assert event.walk("VALARM") and str(event["location"]) == "Wellesley Road, Croydon CR0, UK"
    screenshot(page, "desk-referral-calendar", full_page=False)
