"""The referral desk API: creating referrals, consent, bad input, listing and masking."""

from __future__ import annotations

import datetime as dt

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from services.referrals.api import app
from services.referrals.models import Referral
from services.referrals.runtime import runtime
from tests.services.referrals.conftest import (
    EMAIL,
    MOBILE_E164,
    counts,
    next_weekday,
    publish_meeting,
    referral_body,
    withdraw_meeting,
)
from tests.support.auth import auth

KEYWORKER = auth("keyworker", "croydon")


@pytest.fixture
def client():
    return TestClient(app)


def outbox_events(event_type: str) -> list[dict]:
    t = runtime.outbox_table
    with runtime.sessions() as session:
        rows = session.execute(select(t.c.subscriber, t.c.body).where(t.c.event_type == event_type)).all()
    return [{"subscriber": r.subscriber, **r.body} for r in rows]


def test_create_with_consent_records_who_when_and_wording(client, meeting):
    before = dt.datetime.now(dt.UTC)
    response = client.post("/referrals", json=referral_body(), headers=auth("keyworker", "croydon"))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["site_id"] == "croydon"
    assert body["fellowship"] == "smart"
    assert (body["status"], body["business_status"]) == ("requested", "information-given")
    assert body["contact"] == {"mobile": MOBILE_E164, "email": EMAIL, "masked": False, "unreachable": False,
                               "erased_at": None}
    consent = body["consent"]
    assert consent["to_reminders"] is True
    assert consent["recorded_by"] == "dev-user"
    assert consent["wording_version"] == "2025-01"
    assert dt.datetime.fromisoformat(consent["recorded_at"]) >= before
    # Default planned date: the meeting's next occurrence (a Tuesday, within a week).
    planned = dt.date.fromisoformat(body["planned_date"])
    assert planned.isoweekday() == 2 and 0 <= (planned - dt.date.today()).days <= 7
    events = outbox_events("referral.created")
    assert sorted(e["subscriber"] for e in events) == ["directory", "notifications"]
    payload = events[0]["payload"]
    assert payload["consent_to_reminders"] is True and payload["contact_ciphertext"]
    assert payload["planned_date"] == body["planned_date"]


def test_create_without_contact_sends_no_ciphertext(client, meeting):
    response = client.post("/referrals", json=referral_body(mobile=..., email=..., consent=...), headers=KEYWORKER)
    assert response.status_code == 201, response.text
    assert response.json()["consent"]["to_reminders"] is False
    assert response.json()["contact"]["mobile"] is None
    payload = outbox_events("referral.created")[0]["payload"]
    assert payload["consent_to_reminders"] is False and payload["contact_ciphertext"] is None


def test_email_only_and_chosen_date(client, meeting):
    date = next_weekday(meeting.day, weeks_ahead=2)
    response = client.post("/referrals", json=referral_body(mobile=None, planned_date=date.isoformat(),
                                                             reminder_detail="full"), headers=KEYWORKER)
    assert response.status_code == 201, response.text
    assert response.json()["planned_date"] == date.isoformat()
    assert response.json()["contact"]["mobile"] is None
    assert response.json()["reminder_detail"] == "full"


@pytest.mark.parametrize(("overrides", "field", "words"), [
    ({"mobile": "07812 34567"}, "mobile", "valid"),
    ({"mobile": "not a number"}, "mobile", "phone"),
    ({"mobile": "020 7946 0018"}, "mobile", "landline"),
    ({"mobile": "0121 496 0000"}, "mobile", "landline"),
    ({"mobile": "09098 790123"}, "mobile", "premium"),
    ({"mobile": "0800 123 4567"}, "mobile", "freephone"),
    ({"mobile": "07000 123456"}, "mobile", "personal"),
    ({"mobile": "+33 6 12 34 56 78"}, "mobile", "UK"),
    ({"email": "eleanor@"}, "email", "email"),
    ({"email": "e" * 250 + "@example.org"}, "email", "at most"),
    ({"consent": ...}, "consent", "consent"),
    ({"consent": {"to_reminders": False, "wording_version": "2025-01"}}, "consent", "consent"),
    ({"mobile": ..., "email": ...}, "consent", "needs a mobile or an email"),
    ({"consent": {"to_reminders": True, "wording_version": "1999-01"}}, "consent.wording_version", "unknown"),
    ({"client_reference": "Eleanor Rigby"}, "client_reference", "spaces"),
    ({"client_reference": "EleanorRigby"}, "client_reference", "digit"),
    ({"client_reference": "07812345678"}, "client_reference", "phone"),
    ({"client_reference": "   "}, "client_reference", ""),
    ({"client_reference": "C-" + "1" * 40}, "client_reference", "at most"),
    ({"meeting_slug": "no-such-meeting"}, "meeting_slug", "no meeting"),
    ({"meeting_slug": "m" * 300}, "meeting_slug", "at most"),
    ({"support": "taxi"}, "support", ""),
    ({"reminder_detail": "everything"}, "reminder_detail", ""),
    ({"planned_date": "2020-01-07"}, "planned_date", "past"),
    ({"planned_date": "not-a-date"}, "planned_date", ""),
    ({"surname": "Rigby"}, "surname", ""),
])
def test_bad_input_is_422_naming_the_field_and_stores_nothing(client, meeting, overrides, field, words):
    before = counts()
    response = client.post("/referrals", json=referral_body(**overrides), headers=KEYWORKER)
    assert response.status_code == 422, response.text
    fields = [e["field"] for e in response.json()["errors"]]
    assert field in fields, response.json()
    assert words.lower() in response.json()["detail"].lower()
    assert counts() == before


def test_planned_date_on_the_wrong_weekday_is_422(client, meeting):
    wednesday = next_weekday(meeting.day) + dt.timedelta(days=1)
    before = counts()
    response = client.post("/referrals", json=referral_body(planned_date=wednesday.isoformat()), headers=KEYWORKER)
    assert response.status_code == 422
    assert "Tuesdays" in response.json()["detail"]
    assert counts() == before


def test_withdrawn_or_inactive_meeting_is_422(client, meeting):
    withdraw_meeting(meeting)
    inactive = publish_meeting(slug="gone-online", attendance_option="inactive")
    before = counts()
    for slug in (meeting.slug, inactive.slug):
        response = client.post("/referrals", json=referral_body(meeting_slug=slug), headers=KEYWORKER)
        assert response.status_code == 422
        assert "withdrawn" in response.json()["detail"]
    assert counts() == before


def test_oversized_body_is_refused(client, meeting):
    before = counts()
    response = client.post("/referrals", content=b'{"client_reference": "' + b"x" * 6_000_000 + b'"}',
                           headers={**KEYWORKER, "Content-Type": "application/json"})
    assert response.status_code == 413
    assert counts() == before


def test_contact_is_masked_for_admins_and_shown_to_the_owning_site(client, meeting):
    created = client.post("/referrals", json=referral_body(), headers=KEYWORKER).json()
    own = client.get(f"/referrals/{created['id']}", headers=auth("site_lead", "croydon")).json()
    assert (own["contact"]["mobile"], own["contact"]["email"], own["contact"]["masked"]) == (MOBILE_E164, EMAIL, False)
    admin = client.get(f"/referrals/{created['id']}", headers=auth("admin")).json()
    assert admin["contact"] == {"mobile": "07*** ***678", "email": "e***@example.org", "masked": True,
                                "unreachable": False, "erased_at": None}
    listed = client.get("/referrals", headers=auth("admin")).json()["items"][0]
    assert listed["contact"]["mobile"] == "07*** ***678"


def test_admin_creates_for_a_named_site_only(client, meeting):
    response = client.post("/referrals", json=referral_body(), headers=auth("admin"))
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "site_id"
    response = client.post("/referrals", json=referral_body(site_id="croydon"), headers=auth("admin"))
    assert response.status_code == 201
    assert response.json()["site_id"] == "croydon"
    assert response.json()["contact"]["masked"] is True


@pytest.mark.parametrize("site_id", ["=HYPERLINK(\"http://x\")", "+croydon", "-1", "@sum", "Croydon", "croydon site"])
def test_a_site_id_that_is_not_a_site_key_is_refused(client, meeting, site_id):
    """A site id ends up in the commissioners' CSV: nothing that a spreadsheet would run as a formula."""
    before = counts()
    response = client.post("/referrals", json=referral_body(site_id=site_id), headers=auth("admin"))
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "site_id"
    assert counts() == before


def test_listing_filters_and_pagination(client, meeting):
    other = publish_meeting(slug="croydon-aa-friday", fellowship="aa", day=5, time="19:30")
    ids = []
    for i in range(5):
        body = referral_body(client_reference=f"CRY-{i:04d}", meeting_slug=other.slug if i == 4 else meeting.slug)
        ids.append(client.post("/referrals", json=body, headers=KEYWORKER).json()["id"])
    client.post(f"/referrals/{ids[0]}/transitions", json={"to": "contact-arranged"}, headers=KEYWORKER)
    client.post(f"/referrals/{ids[1]}/transitions", json={"to": "first-meeting-planned"}, headers=KEYWORKER)
    client.post("/referrals", json=referral_body(client_reference="SOL-0001"), headers=auth("keyworker", "solihull"))

    def listed(**params) -> list[str]:
        response = client.get("/referrals", params=params, headers=KEYWORKER)
        assert response.status_code == 200, response.text
        return [r["client_reference"] for r in response.json()["items"]]

    assert sorted(listed()) == ["CRY-0000", "CRY-0001", "CRY-0002", "CRY-0003", "CRY-0004"]
    assert listed(status="accepted") == ["CRY-0000"]
    assert listed(stage="first-meeting-planned") == ["CRY-0001"]
    assert sorted(listed(status="requested")) == ["CRY-0002", "CRY-0003", "CRY-0004"]
    assert listed(meeting=other.slug) == ["CRY-0004"]
    friday = dt.date.fromisoformat(client.get(f"/referrals/{ids[4]}", headers=KEYWORKER).json()["planned_date"])
    assert listed(planned_from=friday.isoformat(), planned_to=friday.isoformat()) == ["CRY-0004"]
    today = dt.date.today()
    assert len(listed(created_from=today.isoformat(), created_to=today.isoformat())) == 5
    assert listed(created_to=(today - dt.timedelta(days=1)).isoformat()) == []
    page = client.get("/referrals", params={"limit": 2, "offset": 4}, headers=KEYWORKER).json()
    assert (page["total"], len(page["items"]), page["limit"], page["offset"]) == (5, 1, 2, 4)
    first_two = client.get("/referrals", params={"limit": 2}, headers=KEYWORKER).json()["items"]
    next_two = client.get("/referrals", params={"limit": 2, "offset": 2}, headers=KEYWORKER).json()["items"]
    assert not {r["id"] for r in first_two} & {r["id"] for r in next_two}
    for bad in ({"status": "done"}, {"stage": "nowhere"}, {"limit": 0}, {"limit": 500}, {"planned_from": "soon"}):
        assert client.get("/referrals", params=bad, headers=KEYWORKER).status_code == 422
    admin = client.get("/referrals", params={"site": "solihull"}, headers=auth("admin")).json()
    assert [r["client_reference"] for r in admin["items"]] == ["SOL-0001"]
    assert client.get("/referrals", headers=auth("admin")).json()["total"] == 6


def test_consent_withdrawal_stops_reminders_erases_contact_but_keeps_the_referral(client, meeting):
    created = client.post("/referrals", json=referral_body(), headers=KEYWORKER).json()
    response = client.post(f"/referrals/{created['id']}/consent-withdrawal", headers=auth("keyworker", "croydon"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "requested" and body["ended_at"] is None
    assert body["consent"]["withdrawn_by"] == "dev-user" and body["consent"]["withdrawn_at"]
    assert body["contact"]["mobile"] is None and body["contact"]["email"] is None and body["contact"]["erased_at"]
    assert body["history"][-1]["action"] == "consent_withdrawn"
    with runtime.sessions() as session:
        row = session.get(Referral, created["id"])
        assert row.mobile is None and row.email is None
    events = outbox_events("referral.consent_withdrawn")
    assert sorted(e["subscriber"] for e in events) == ["directory", "notifications"]
    # Repeating it changes nothing and publishes nothing more.
    before = counts()
    assert client.post(f"/referrals/{created['id']}/consent-withdrawal", headers=KEYWORKER).status_code == 200
    assert counts() == before
    # The referral carries on.
    moved = client.post(f"/referrals/{created['id']}/transitions", json={"to": "contact-arranged"}, headers=KEYWORKER)
    assert moved.status_code == 200


def test_withdrawing_consent_never_given_is_409(client, meeting):
    created = client.post("/referrals", json=referral_body(mobile=..., email=..., consent=...), headers=KEYWORKER).json()
    before = counts()
    response = client.post(f"/referrals/{created['id']}/consent-withdrawal", headers=KEYWORKER)
    assert response.status_code == 409
    assert "no consent" in response.json()["detail"]
    assert counts() == before


def test_consent_wording_is_served_verbatim(client):
    response = client.get("/consent-wording", headers=KEYWORKER)
    assert response.status_code == 200
    body = response.json()
    current = [v for v in body["versions"] if v["current"]]
    assert [v["version"] for v in current] == [body["current"]] == ["2025-01"]
    assert "reply" in current[0]["text"].lower() and "STOP" in current[0]["text"]
    assert client.get("/consent-wording").status_code == 401


def test_unknown_referral_is_404(client, meeting):
    response = client.get("/referrals/6b1f1a52-0d1c-4c1b-8d0e-6a4c1d2b3e4f", headers=KEYWORKER)
    assert response.status_code == 404
    assert client.get("/referrals/not-a-uuid", headers=KEYWORKER).status_code == 422


def test_a_new_referral_is_answered_as_it_is_then_read_back(client, meeting):
    """The creation's answer is built without reading the history and reminders back (it holds
    them): it must be what the referral's page then reads from the database."""
    created = client.post("/referrals", json=referral_body(), headers=KEYWORKER)
    assert created.status_code == 201, created.text
    read = client.get(f"/referrals/{created.json()['id']}", headers=KEYWORKER)
    assert read.status_code == 200
    assert created.json()["history"] == read.json()["history"]
    assert [h["action"] for h in created.json()["history"]] == ["created"]
    assert created.json()["reminders"] == read.json()["reminders"] == []
    assert {k: v for k, v in created.json().items() if k != "updated_at"} == \
        {k: v for k, v in read.json().items() if k != "updated_at"}
