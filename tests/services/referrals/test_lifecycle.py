"""The referral lifecycle: every (from, to) stage pair is checked against the documented table,
and through the API an illegal move is a 409 naming the allowed ones, with nothing stored."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from fastapi.testclient import TestClient

from services.referrals.api import app
from services.referrals.service import (
    ALLOWED,
    REASON_REQUIRED,
    STAGE_STATUS,
    IllegalTransition,
    ReferralError,
    check_transition,
)
from shared.events import ENDED_STATUSES, REFERRAL_STATUSES, Stage
from tests.services.referrals.conftest import counts, next_weekday, referral_body
from tests.support.auth import auth

S = Stage
# The table from the service docstring, written out again so a change to either is noticed.
EXPECTED = {
    S.information_given: {S.contact_arranged, S.first_meeting_planned, S.on_hold, S.did_not_engage, S.declined,
                          S.entered_in_error},
    S.contact_arranged: {S.first_meeting_planned, S.on_hold, S.did_not_engage, S.declined, S.entered_in_error},
    S.first_meeting_planned: {S.first_meeting_attended, S.on_hold, S.did_not_engage, S.declined, S.entered_in_error},
    S.first_meeting_attended: {S.followed_up, S.on_hold, S.did_not_engage, S.entered_in_error},
    S.on_hold: {S.contact_arranged, S.first_meeting_planned, S.did_not_engage, S.declined, S.entered_in_error},
    S.followed_up: {S.entered_in_error},
    S.did_not_engage: {S.entered_in_error},
    S.declined: {S.entered_in_error},
    S.entered_in_error: set(),
}


def inputs_for(to: Stage) -> dict:
    return {"reason": "client asked" if to in REASON_REQUIRED else None,
            "accompanied": True if to == S.first_meeting_attended else None}


@pytest.mark.parametrize(("from_stage", "to_stage"), list(itertools.product(Stage, Stage)),
                         ids=lambda s: s.value)
def test_every_stage_pair(from_stage, to_stage):
    if to_stage in EXPECTED[from_stage]:
        check_transition(from_stage=from_stage, to_stage=to_stage, **inputs_for(to_stage))
    else:
        with pytest.raises(IllegalTransition) as err:
            check_transition(from_stage=from_stage, to_stage=to_stage, **inputs_for(to_stage))
        assert err.value.allowed == [s.value for s in ALLOWED[from_stage]]
        assert set(err.value.allowed) == {s.value for s in EXPECTED[from_stage]}


def test_stages_map_onto_the_fhir_statuses():
    assert set(STAGE_STATUS) == set(Stage)
    assert set(STAGE_STATUS.values()) == set(REFERRAL_STATUSES)
    # Ended referrals can only be corrected, never reopened.
    for stage, status in STAGE_STATUS.items():
        if status in ENDED_STATUSES:
            assert set(ALLOWED[stage]) <= {S.entered_in_error}


@pytest.mark.parametrize("to_stage", sorted(REASON_REQUIRED), ids=lambda s: s.value)
@pytest.mark.parametrize("reason", [None, "", "   "])
def test_reason_is_required_for_hold_failed_cancelled(to_stage, reason):
    assert {STAGE_STATUS[s] for s in REASON_REQUIRED} == {"on-hold", "failed", "cancelled"}
    with pytest.raises(ReferralError) as err:
        check_transition(from_stage=S.information_given, to_stage=to_stage, reason=reason)
    assert err.value.field == "reason"


def test_attending_needs_the_accompanied_flag_and_only_attending_takes_it():
    with pytest.raises(ReferralError) as err:
        check_transition(from_stage=S.first_meeting_planned, to_stage=S.first_meeting_attended)
    assert err.value.field == "accompanied"
    with pytest.raises(ReferralError):
        check_transition(from_stage=S.information_given, to_stage=S.contact_arranged, accompanied=True)


# --- through the API -------------------------------------------------------------------

@pytest.fixture
def client():
    return TestClient(app)


def create(client, headers) -> dict:
    response = client.post("/referrals", json=referral_body(), headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def move(client, referral_id, headers, **body):
    return client.post(f"/referrals/{referral_id}/transitions", json=body, headers=headers)


def test_full_journey_is_kept_in_history(client, meeting):
    headers = auth("keyworker", "croydon")
    referral = create(client, headers)
    assert (referral["status"], referral["business_status"]) == ("requested", "information-given")
    steps = [
        {"to": "contact-arranged"},
        {"to": "first-meeting-planned"},
        {"to": "first-meeting-attended", "accompanied": True},
        {"to": "followed-up"},
    ]
    for step in steps:
        response = move(client, referral["id"], headers, **step)
        assert response.status_code == 200, response.text
    body = response.json()
    assert (body["status"], body["business_status"], body["accompanied"]) == ("completed", "followed-up", True)
    assert body["ended_at"] is not None
    assert body["allowed_transitions"] == ["entered-in-error"]
    history = [(h["action"], h["from_stage"], h["to_stage"], h["by"]) for h in body["history"]]
    assert history == [
        ("created", None, "information-given", "dev-user"),
        ("transition", "information-given", "contact-arranged", "dev-user"),
        ("transition", "contact-arranged", "first-meeting-planned", "dev-user"),
        ("transition", "first-meeting-planned", "first-meeting-attended", "dev-user"),
        ("transition", "first-meeting-attended", "followed-up", "dev-user"),
    ]
    assert [h["to_status"] for h in body["history"]] == ["requested", "accepted", "in-progress", "in-progress", "completed"]


def test_illegal_move_is_409_naming_the_allowed_ones_and_stores_nothing(client, meeting):
    headers = auth("keyworker", "croydon")
    referral = create(client, headers)
    before = counts()
    response = move(client, referral["id"], headers, to="followed-up")
    assert response.status_code == 409
    assert response.json()["allowed"] == ["contact-arranged", "first-meeting-planned", "on-hold", "did-not-engage",
                                          "declined", "entered-in-error"]
    assert "contact-arranged" in response.json()["detail"]
    assert counts() == before
    assert client.get(f"/referrals/{referral['id']}", headers=headers).json()["business_status"] == "information-given"


def test_missing_reason_is_422_and_stores_nothing(client, meeting):
    headers = auth("site_lead", "croydon")
    referral = create(client, headers)
    before = counts()
    response = move(client, referral["id"], headers, to="declined")
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "reason"
    assert counts() == before
    response = move(client, referral["id"], headers, to="declined", reason="chose another group")
    assert response.status_code == 200
    assert response.json()["history"][-1]["reason"] == "chose another group"
    assert response.json()["status"] == "cancelled"


def test_unknown_stage_and_oversized_reason_are_422(client, meeting):
    headers = auth("keyworker", "croydon")
    referral = create(client, headers)
    before = counts()
    assert move(client, referral["id"], headers, to="finished").status_code == 422
    response = move(client, referral["id"], headers, to="on-hold", reason="x" * 501)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "reason"
    assert counts() == before


def test_hold_and_resume_with_a_new_planned_date(client, meeting):
    headers = auth("keyworker", "croydon")
    referral = create(client, headers)
    assert move(client, referral["id"], headers, to="on-hold", reason="in hospital").status_code == 200
    later = next_weekday(meeting.day, weeks_ahead=3)
    wrong_day = later + dt.timedelta(days=1)
    response = move(client, referral["id"], headers, to="first-meeting-planned", planned_date=wrong_day.isoformat())
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "planned_date"
    response = move(client, referral["id"], headers, to="first-meeting-planned", planned_date=later.isoformat())
    assert response.status_code == 200, response.text
    assert response.json()["planned_date"] == later.isoformat()
    assert response.json()["status"] == "in-progress"
