"""Who may do what: every endpoint against every role, own site and another site.

Keyworkers and site leads act only for their own site, admins for all, commissioners for
no individual referral; no token is 401. A refused request changes nothing.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from services.referrals.api import app
from tests.services.referrals.conftest import counts, referral_body
from tests.support.auth import auth

CALLERS = {
    "keyworker-own": (auth("keyworker", "croydon"), "own"),
    "keyworker-other": (auth("keyworker", "solihull"), "other"),
    "site_lead-own": (auth("site_lead", "croydon"), "own"),
    "site_lead-other": (auth("site_lead", "solihull"), "other"),
    "commissioner": (auth("commissioner", None, "london"), "none"),
    "admin": (auth("admin"), "all"),
    "no-token": ({}, "anonymous"),
}
EXPECTED = {  # endpoint -> status for own / other / none / all / anonymous
    "create": {"own": 201, "other": 403, "none": 403, "all": 201, "anonymous": 401},
    "list": {"own": 200, "other": 200, "none": 403, "all": 200, "anonymous": 401},
    "list-croydon": {"own": 200, "other": 403, "none": 403, "all": 200, "anonymous": 401},
    "get": {"own": 200, "other": 403, "none": 403, "all": 200, "anonymous": 401},
    "transition": {"own": 200, "other": 403, "none": 403, "all": 200, "anonymous": 401},
    "consent-withdrawal": {"own": 200, "other": 403, "none": 403, "all": 200, "anonymous": 401},
    "consent-wording": {"own": 200, "other": 200, "none": 200, "all": 200, "anonymous": 401},
}


@pytest.fixture
def client():
    return TestClient(app)


@pytest.fixture
def croydon_referral(client, meeting) -> str:
    response = client.post("/referrals", json=referral_body(), headers=auth("keyworker", "croydon"))
    assert response.status_code == 201
    return response.json()["id"]


def call(client, endpoint: str, headers: dict, referral_id: str):
    if endpoint == "create":
        # Everyone asks for a Croydon referral: only Croydon staff and admins may make one.
        return client.post("/referrals", json=referral_body(site_id="croydon", client_reference="CRY-0777"),
                           headers=headers)
    if endpoint == "list":
        return client.get("/referrals", headers=headers)
    if endpoint == "list-croydon":
        return client.get("/referrals", params={"site": "croydon"}, headers=headers)
    if endpoint == "get":
        return client.get(f"/referrals/{referral_id}", headers=headers)
    if endpoint == "transition":
        return client.post(f"/referrals/{referral_id}/transitions", json={"to": "contact-arranged"}, headers=headers)
    if endpoint == "consent-withdrawal":
        return client.post(f"/referrals/{referral_id}/consent-withdrawal", headers=headers)
    if endpoint == "consent-wording":
        return client.get("/consent-wording", headers=headers)
    raise AssertionError(endpoint)


@pytest.mark.parametrize("caller", list(CALLERS))
@pytest.mark.parametrize("endpoint", list(EXPECTED))
def test_endpoint_for_role(client, croydon_referral, endpoint, caller):
    headers, scope = CALLERS[caller]
    expected = EXPECTED[endpoint][scope]
    before = counts()
    response = call(client, endpoint, headers, croydon_referral)
    assert response.status_code == expected, response.text
    if expected >= 400:
        assert counts() == before
        return
    if endpoint.startswith("list"):
        sites = {r["site_id"] for r in response.json()["items"]}
        # Other-site staff see an empty list of their own site, never Croydon's referrals.
        assert sites == (set() if scope == "other" else {"croydon"})
    if endpoint == "get":
        assert response.json()["id"] == croydon_referral
        # Full contact details only for the owning site.
        assert response.json()["contact"]["masked"] is (scope != "own")
