"""Admin meeting API: create, change, withdraw; every change published through the outbox."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from services.directory.api import app
from services.directory.runtime import runtime
from tests.services.directory.helpers import meeting, outbox_events
from tests.support.auth import auth

pytestmark = pytest.mark.usefixtures("clean_state")
client = TestClient(app)
ADMIN = auth("admin")


def test_create_publishes_a_full_snapshot_and_shows_type_names():
    body = meeting(notes="Ring the bell", location_notes="Side door", group="Croydon SMART", booking_required=True,
                   peer_led=True, facilitator_name="Sam", facilitator_contact="+447700900123",
                   conference_url=None, website="https://smart.example.org")
    response = client.post("/meetings", json=body, headers=ADMIN)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["facilitator_contact"] == "+447700900123"  # admins see it
    public = client.get("/meetings/croydon-smart-tuesday").json()
    assert "facilitator_contact" not in public and "facilitator_name" not in public
    assert public["type_names"] == [{"code": "O", "name": "Open"}, {"code": "D", "name": "Discussion"}]
    assert public["notes"] == "Ring the bell" and public["group"] == "Croydon SMART" and public["peer_led"] is True
    assert public["next_start_local"].endswith(("+00:00", "+01:00"))
    [(kind, payload)] = outbox_events()
    assert kind == "meeting.published"
    assert payload["slug"] == "croydon-smart-tuesday" and payload["booking_required"] is True
    assert payload["latitude"] == 51.372 and payload["types"] == ["O", "D"]
    # Facilitator contact is encrypted at rest.
    with runtime.engine.connect() as conn:
        stored = conn.execute(text("SELECT facilitator_contact FROM meetings")).scalar_one()
    assert stored and "+4477" not in stored


def test_postcode_without_coordinates_is_located_by_its_outward_code():
    response = client.post("/meetings", json=meeting(latitude=None, longitude=None, postcode="s1 2ab"), headers=ADMIN)
    assert response.status_code == 201, response.text
    got = response.json()
    assert got["postcode"] == "S1 2AB" and got["approximate"] is True
    assert (got["latitude"], got["longitude"]) == (53.3802, -1.46777) or abs(got["latitude"] - 53.38) < 0.05


@pytest.mark.parametrize(("change", "field", "words"), [
    ({"day": 7}, "day", "less than or equal to 6"),
    ({"time": "25:00"}, "time", "pattern"),
    ({"types": ["O", "ZZ"]}, "types", "unknown Meeting Guide type code(s): ZZ"),
    ({"timezone": "Mars/Base"}, "timezone", "IANA"),
    ({"postcode": "ZZ99 9ZZ", "latitude": None, "longitude": None}, "postcode", "unknown postcode"),
    ({"postcode": "12345"}, "postcode", "not a UK postcode"),
    ({"attendance_option": "online", "conference_url": None}, "conference_url", "need a conference_url"),
    ({"time": None}, "time", "needs a start time"),
    ({"latitude": 91}, "latitude", "less than or equal to 90"),
])
def test_bad_meetings_get_422_naming_the_field(change, field, words):
    response = client.post("/meetings", json=meeting(**change), headers=ADMIN)
    assert response.status_code == 422, response.text
    errors = response.json()["errors"]
    assert any(e["field"] == field and words in e["message"] for e in errors), errors
    assert outbox_events() == []


def test_patch_put_and_withdraw_publish_updated_and_withdrawn():
    assert client.post("/meetings", json=meeting(), headers=ADMIN).status_code == 201
    response = client.patch("/meetings/croydon-smart-tuesday", json={"time": "18:30", "types": ["C"]}, headers=ADMIN)
    assert response.status_code == 200, response.text
    assert response.json()["time"] == "18:30" and response.json()["end_time"] == "15:30"
    # The same change again changes nothing and publishes nothing.
    assert client.patch("/meetings/croydon-smart-tuesday", json={"time": "18:30"}, headers=ADMIN).status_code == 200
    put = client.put("/meetings/croydon-smart-tuesday", json=meeting(name="SMART Croydon (new hall)"), headers=ADMIN)
    assert put.status_code == 200 and put.json()["name"] == "SMART Croydon (new hall)"
    assert put.json()["time"] == "14:00"
    bad = client.patch("/meetings/croydon-smart-tuesday", json={"day": -1, "colour": "red"}, headers=ADMIN)
    assert bad.status_code == 422
    assert {e["field"] for e in bad.json()["errors"]} == {"day", "colour"}
    withdrawn = client.post("/meetings/croydon-smart-tuesday/withdraw", json={"reason": "venue closed"}, headers=ADMIN)
    assert withdrawn.status_code == 200 and withdrawn.json()["active"] is False
    events = outbox_events()
    assert [kind for kind, _ in events] == ["meeting.published", "meeting.updated", "meeting.updated", "meeting.withdrawn"]
    assert events[1][1]["time"] == "18:30" and events[1][1]["types"] == ["C"]
    assert events[3][1]["reason"] == "venue closed" and events[3][1]["meeting"]["active"] is False
    # Withdrawn meetings leave search, cannot be patched, and withdrawing again publishes nothing.
    assert client.get("/meetings", params={"q": "croydon"}).json()["total"] == 0
    assert client.patch("/meetings/croydon-smart-tuesday", json={"time": "19:00"}, headers=ADMIN).status_code == 409
    client.post("/meetings/croydon-smart-tuesday/withdraw", headers=ADMIN)
    assert len(outbox_events()) == 4
    # Creating it again brings it back as published.
    assert client.post("/meetings", json=meeting(), headers=ADMIN).status_code == 201
    assert outbox_events()[-1][0] == "meeting.published"
    assert client.post("/meetings", json=meeting(), headers=ADMIN).status_code == 409


def test_unknown_meeting_is_404():
    assert client.get("/meetings/nope").status_code == 404
    assert client.patch("/meetings/nope", json={"time": "10:00"}, headers=ADMIN).status_code == 404
    assert client.post("/meetings/nope/withdraw", headers=ADMIN).status_code == 404


def test_admin_endpoints_need_an_admin():
    assert client.post("/meetings", json=meeting()).status_code == 401
    assert client.post("/meetings", json=meeting(), headers={"Authorization": "Bearer junk"}).status_code == 401
    for role in ("keyworker", "site_lead", "commissioner"):
        headers = auth(role, site="croydon", region="London")
        assert client.post("/meetings", json=meeting(), headers=headers).status_code == 403
        assert client.patch("/meetings/x", json={}, headers=headers).status_code == 403
        assert client.post("/feeds/import?source=x", json=[], headers=headers).status_code == 403
        assert client.post("/sites", json={}, headers=headers).status_code == 403
    assert outbox_events() == []


def test_replay_republishes_every_live_meeting():
    from typer.testing import CliRunner

    from services.directory.cli import app as cli

    for n in range(3):
        assert client.post("/meetings", json=meeting(slug=f"m{n}"), headers=ADMIN).status_code == 201
    client.post("/meetings/m1/withdraw", headers=ADMIN)
    before = len(outbox_events())
    result = CliRunner().invoke(cli, ["replay"])
    assert result.exit_code == 0, result.output
    assert "re-published 2 meetings" in result.output
    replayed = outbox_events()[before:]
    assert sorted((k, p["slug"]) for k, p in replayed) == [("meeting.published", "m0"), ("meeting.published", "m2")]
