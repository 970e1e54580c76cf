"""The desk's calendar file of a client's planned session, through the real app and Postgres:
who may download it, what it says, and when there is none."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from fastapi.testclient import TestClient
from icalendar import Calendar

from services.referrals import service
from services.referrals.api import app
from services.referrals.models import Referral
from services.referrals.runtime import runtime
from services.referrals.schemas import TransitionIn
from shared.events import Stage
from tests.services.referrals.conftest import EMAIL, MOBILE_E164, next_weekday, publish_meeting, withdraw_meeting
from tests.services.referrals.test_pages import KEYWORKER, Page, get, make_referral
from tests.support.auth import auth

pytestmark = pytest.mark.usefixtures("clean_state")

@pytest.fixture
def client():
    return TestClient(app)


VENUE = {"location": "Ruskin House", "formatted_address": "23 Coombe Road, Croydon CR0 1BD", "postcode": "CR0 1BD"}


def download(client, referral_id, headers=KEYWORKER):
    return client.get(f"/desk/referrals/{referral_id}/session.ics", headers=headers)


def test_keyworker_downloads_a_discreet_entry_with_nothing_about_the_client(client):
    meeting = publish_meeting(**VENUE)
    planned = next_weekday(meeting.day)
    referral_id = make_referral("CRY-0042", planned_date=planned, email=EMAIL)
    page = get(client, f"/desk/referrals/{referral_id}")
    assert "Add the planned session to a calendar (.ics)" in page.by_id("session-calendar")
    assert "Discreet" in page.by_id("session-calendar-hint")

    response = download(client, referral_id)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/calendar")
    assert response.headers["content-disposition"] == f'attachment; filename="meeting-{planned.isoformat()}.ics"'
    assert response.headers["cache-control"].startswith("no-store")
    body = response.text
    for personal in ("CRY-0042", MOBILE_E164, "07812", "7812345678", EMAIL, str(referral_id), "kw-1"):
        assert personal not in body
    for telling in ("SMART", "Recovery", "smart"):
        assert telling not in body
    event = Calendar.from_ical(response.content).walk("VEVENT")[0]
    assert str(event["summary"]) == "Your meeting"
    assert str(event["location"]) == "Ruskin House, 23 Coombe Road, Croydon CR0 1BD"
    assert event["dtstart"].dt == dt.datetime.combine(planned, dt.time(14, 0)).replace(
        tzinfo=event["dtstart"].dt.tzinfo) and event["dtstart"].params["TZID"] == "Europe/London"
    assert event.walk("VALARM")
    # Downloaded again: the same entry (the calendar app updates it rather than adding another).
    assert Calendar.from_ical(download(client, referral_id).content).walk("VEVENT")[0]["uid"] == event["uid"]


def test_full_detail_only_when_the_client_chose_it(client):
    publish_meeting(**VENUE)
    referral_id = make_referral("CRY-0043", reminder_detail="full")
    page = get(client, f"/desk/referrals/{referral_id}")
    assert "Names the meeting" in page.by_id("session-calendar-hint")
    event = Calendar.from_ical(download(client, referral_id).content).walk("VEVENT")[0]
    assert str(event["summary"]) == "SMART Recovery Croydon"
    assert "CRY-0043" not in download(client, referral_id).text


def test_only_the_referrals_own_site_may_download_it(client):
    publish_meeting(**VENUE)
    referral_id = make_referral()
    other = download(client, referral_id, headers=auth("keyworker", "sheffield"))
    assert other.status_code == 403 and "another site" in Page(other).text and "BEGIN:VCALENDAR" not in other.text
    assert download(client, referral_id, headers=auth("commissioner", region="London")).status_code == 403
    assert download(client, referral_id, headers=auth("site_lead", "croydon")).status_code == 200
    anonymous = client.get(f"/desk/referrals/{referral_id}/session.ics", follow_redirects=False)
    assert anonymous.status_code == 303 and anonymous.headers["location"].startswith("/signin?next=")
    for unknown in (uuid.uuid4(), "not-a-uuid"):
        response = download(client, unknown)
        assert response.status_code == 404 and "no such referral" in Page(response).text


def test_no_entry_once_the_referral_ended_or_the_meeting_went(client):
    meeting = publish_meeting(**VENUE)
    ended = make_referral("CRY-0044")
    with runtime.transaction() as session:
        service.transition_referral(session, referral=session.get(Referral, ended), by="kw-1",
                                    transition_in=TransitionIn(to=Stage.declined, reason="Does not want to go"))
    response = download(client, ended)
    assert response.status_code == 404 and "This referral has ended" in Page(response).text
    assert not get(client, f"/desk/referrals/{ended}").has("session-calendar")

    open_one = make_referral("CRY-0045")
    assert get(client, f"/desk/referrals/{open_one}").has("session-calendar")
    withdraw_meeting(meeting)
    response = download(client, open_one)
    assert response.status_code == 404 and "no longer listed" in Page(response).text
    assert not get(client, f"/desk/referrals/{open_one}").has("session-calendar")


def test_no_entry_for_a_session_already_past(client):
    publish_meeting(**VENUE)
    referral_id = make_referral("CRY-0046")
    with runtime.transaction() as session:
        session.get(Referral, referral_id).planned_date = dt.date(2020, 1, 7)
    response = download(client, referral_id)
    assert response.status_code == 404 and "already taken place" in Page(response).text


def test_no_entry_for_a_planned_date_the_meeting_is_closed(client):
    from shared.events import MeetingException

    meeting = publish_meeting(**VENUE)
    planned = next_weekday(meeting.day)
    referral_id = make_referral("CRY-0047", planned_date=planned)
    publish_meeting(**VENUE, exceptions=[MeetingException(date=planned, closed=True, note="Christmas")])
    response = download(client, referral_id)
    assert response.status_code == 404 and "closed on the planned date (Christmas)" in Page(response).text
    assert not get(client, f"/desk/referrals/{referral_id}").has("session-calendar")
