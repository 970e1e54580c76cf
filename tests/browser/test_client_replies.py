"""Closing the loop, for real: every service running, the client's texts arriving through the
notifications API's inbound-SMS callback over HTTP, events through real workers, and the
keyworker in a real browser: the work queue shows an unread reply and the client's YES, one
click confirms it, and the dashboard's confirmed-attendance count moves."""

from __future__ import annotations

import datetime as dt
import uuid

import httpx
import pytest
from sqlalchemy import select, update

from services.notifications.models import DevMessage, Reminder
from services.notifications.runtime import runtime as notifications
from services.referrals.models import meeting_replica
from services.referrals.runtime import runtime as referrals
from shared.events import utcnow
from tests.browser.conftest import screenshot
from tests.conftest import SERVICES, flush_redis, truncate_all
from tests.support.auth import auth, token_for
from tests.support.processes import wait_for
from tests.support.stack import Stack

pytestmark = pytest.mark.browser

MEETING = "croydon-smart-2"  # SMART Recovery Croydon (services/directory/seed.py)
MOBILE = "07812 345461"
# No quiet hours (the follow-up goes whatever the time of the run); a quick dispatcher.
ENV = {"NOTIFICATIONS_QUIET_START": "00:00", "NOTIFICATIONS_QUIET_END": "00:00", "NOTIFICATIONS_DISPATCH_SECONDS": "0.5"}


@pytest.fixture(scope="module")
def stack():
    for service in SERVICES:
        truncate_all(service)
    flush_redis()
    running = Stack(ENV).start()
    from services.directory.seed import seed_demo

    seed_demo()
    yield running
    running.stop()


def in_replica() -> bool:
    with referrals.sessions() as session:
        return session.execute(select(meeting_replica.c.slug).where(meeting_replica.c.slug == MEETING)).first() is not None


def follow_up_of(referral_id: str) -> Reminder | None:
    with notifications.sessions() as session:
        return session.scalar(select(Reminder).where(Reminder.referral_id == uuid.UUID(referral_id),
                                                     Reminder.kind == "follow_up"))


def text_in(base: str, message: str, message_id: str | None = None) -> dict:
    """The client's text as GOV.UK Notify delivers it: a POST to the inbound callback."""
    response = httpx.post(f"{base}/callbacks/inbound-sms", timeout=10, json={
        "id": message_id or str(uuid.uuid4()), "source_number": "44" + MOBILE.replace(" ", "")[1:],
        "destination_number": "07700900000", "message": message, "date_received": utcnow().isoformat()},
        headers={"Authorization": f"Bearer {notifications.settings.callback_token}"})
    assert response.status_code == 200, response.text
    return response.json()


def sign_in(page, base: str, token: str, next_path: str) -> None:
    page.goto(f"{base}{next_path}")
    if "/signin" in page.url:  # not yet signed in to this service
        page.fill("#token", token)
        page.get_by_role("button", name="Sign in").click()


def test_keyworker_sees_a_reply_and_a_yes_confirms_it_and_the_dashboard_moves(stack, page):
    desk, directory, notify = stack.urls["referrals"], stack.urls["directory"], stack.urls["notifications"]
    wait_for(in_replica, timeout=30, what="the seeded meetings in the referrals replica")
    made = httpx.post(f"{desk}/referrals", headers=auth("keyworker", "croydon"), timeout=10, json={
        "meeting_slug": MEETING, "support": "none", "client_reference": "CRY-0461", "mobile": MOBILE,
        "consent": {"to_reminders": True, "wording_version": "2025-01"}, "reminder_detail": "discreet"})
    assert made.status_code == 201, made.text
    referral_id = made.json()["id"]

    # The meeting happened (the chaos suite's time machine): the follow-up goes, asking YES or NO.
    follow_up = wait_for(lambda: follow_up_of(referral_id), timeout=60, what="the reminders planned")
    with notifications.transaction() as session:
        session.execute(update(Reminder).where(Reminder.id == follow_up.id).values(
            meeting_start=utcnow() - dt.timedelta(hours=3), meeting_end=utcnow() - dt.timedelta(hours=2),
            due_at=utcnow()))
    wait_for(lambda: follow_up_of(referral_id).sent_at is not None, timeout=60, what="the follow-up sent")
    with notifications.sessions() as session:
        body = session.scalar(select(DevMessage.body).where(DevMessage.reference == str(follow_up.id)))
    assert "Reply YES or NO" in body

    # The client texts: an ambiguous sentence (not a STOP), then YES; Notify retries the YES.
    assert text_in(notify, "Please don't cancel my lift, I'll be at the end of the road") == {
        "outcome": "reply passed on"}
    yes_id = str(uuid.uuid4())
    assert text_in(notify, "Yes!", yes_id) == {"outcome": "attendance reported"}
    assert text_in(notify, "Yes!", yes_id) == {"outcome": "already received"}

    # The dashboard (site staff see their own site's exact counts) before the keyworker confirms.
    sign_in(page, directory, token_for("keyworker", "croydon"), "/dashboard")

    def dashboard_shows(metric: str, value: str) -> bool:
        page.goto(f"{directory}/dashboard")
        return page.locator(f"#attendance-croydon-{metric}").inner_text().strip() == value

    wait_for(lambda: dashboard_shows("client_reported_attended", "1"), timeout=60, interval=0.5,
             what="the client's report counted")
    assert dashboard_shows("attendance_confirmed", "0")

    # The keyworker's work queue shows the unread messages and the report waiting.
    sign_in(page, desk, token_for("keyworker", "croydon"), "/desk/queue?mine=0")

    def queue_shows() -> bool:
        page.goto(f"{desk}/desk/queue?mine=0")
        return (page.locator("#count-replies").inner_text() == "1"
                and page.locator("#count-reports").inner_text() == "1")

    wait_for(queue_shows, timeout=60, interval=0.5, what="the replies on the work queue")
    screenshot(page, "desk-queue")
    page.locator("#queue-reports").get_by_role("link", name="CRY-0461").click()
    replies = page.locator(".reply")
    assert replies.count() == 2
    assert "Yes!" in replies.nth(0).inner_text() and "New" in replies.nth(0).inner_text()
    assert "cancel my lift" in replies.nth(1).inner_text()
    assert "The client says they went to the meeting" in page.content()
    screenshot(page, "desk-referral-replies")
    page.get_by_role("button", name="Confirm: went on their own").click()
    assert "Confirmed" in page.locator(".notice").inner_text()
    assert page.locator("#stage").inner_text() == "First meeting attended"

    # Seen and confirmed: off the queue; and the confirmed count moves on the dashboard.
    page.goto(f"{desk}/desk/queue?mine=0")
    assert page.locator("#count-replies").inner_text() == "0" and page.locator("#count-reports").inner_text() == "0"
    sign_in(page, directory, token_for("keyworker", "croydon"), "/dashboard")
    wait_for(lambda: dashboard_shows("attendance_confirmed", "1"), timeout=60, interval=0.5,
             what="the confirmed attendance counted")
    assert dashboard_shows("first_meeting_attended", "1")
