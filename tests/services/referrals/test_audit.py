"""The audit trail: every view of a client's contact details in clear and every change to a referral
records who, when and what (never the details); site leads read their site's trail, admins all;
the scheduler prunes entries past REFERRALS_AUDIT_RETENTION_DAYS."""

from __future__ import annotations

import datetime as dt
import os
import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from services.referrals import audit
from services.referrals.api import app
from services.referrals.models import AuditEntry
from services.referrals.runtime import runtime
from tests.services.referrals.conftest import EMAIL, MOBILE, MOBILE_E164, referral_body
from tests.support.auth import auth, token_for
from tests.support.processes import scheduler, wait_for

KEYWORKER = auth("keyworker", "croydon")
LEAD = auth("site_lead", "croydon")
OTHER_LEAD = auth("site_lead", "kendal")
ADMIN = auth("admin")


@pytest.fixture
def client():
    return TestClient(app)


def trail() -> list[AuditEntry]:
    with runtime.sessions() as session:
        return list(session.scalars(select(AuditEntry).order_by(AuditEntry.id)).all())


def test_views_and_changes_record_who_when_and_what_but_never_the_details(client, meeting):
    created = client.post("/referrals", json=referral_body(), headers=KEYWORKER)
    assert created.status_code == 201, created.text
    referral_id = created.json()["id"]
    start = len(trail())

    assert client.get(f"/referrals/{referral_id}", headers=KEYWORKER).json()["contact"]["mobile"] == MOBILE_E164
    assert client.get(f"/referrals/{referral_id}", headers=ADMIN).json()["contact"]["masked"] is True  # not a view
    assert client.get(f"/referrals/{referral_id}", headers=auth("keyworker", "kendal")).status_code == 403
    moved = client.post(f"/referrals/{referral_id}/transitions", json={"to": "contact-arranged"}, headers=LEAD)
    assert moved.status_code == 200, moved.text
    assert client.post(f"/referrals/{referral_id}/consent-withdrawal", headers=KEYWORKER).status_code == 200

    entries = trail()[start:]
    summary = [(e.actor, e.actor_role, e.action, e.detail, e.via) for e in entries]
    assert ("dev-user", "keyworker", "contact_viewed", "mobile, email", "api") == summary[0]
    assert ("dev-user", None, "transition", "information-given → contact-arranged", "staff") in summary
    assert ("dev-user", None, "consent_withdrawn", "contact-arranged", "staff") in summary
    assert not any(e.action == "contact_viewed" and e.actor_role == "admin" for e in entries)
    assert all(e.site_id == "croydon" and str(e.referral_id) == referral_id for e in entries)
    for entry in trail():
        text = " ".join(str(v) for v in (entry.actor, entry.detail, entry.action, entry.via))
        assert MOBILE_E164 not in text and MOBILE not in text and EMAIL not in text

    page = client.get("/audit", headers=LEAD)
    assert page.status_code == 200
    actions = [item["action"] for item in page.json()["items"]]
    times = [item["at"] for item in page.json()["items"]]
    assert times == sorted(times, reverse=True)  # newest first
    assert {"created", "transition", "consent_withdrawn", "contact_viewed"} <= set(actions)
    assert page.json()["total"] == len(trail())
    one = client.get("/audit", params={"referral": referral_id, "since": dt.date.today().isoformat(),
                                       "until": dt.date.today().isoformat()}, headers=ADMIN)
    assert one.json()["total"] == len(trail())


def test_only_site_leads_and_admins_read_it_and_each_lead_only_their_site(client, meeting):
    assert client.post("/referrals", json=referral_body(), headers=KEYWORKER).status_code == 201
    assert client.get("/audit", headers=KEYWORKER).status_code == 403
    assert client.get("/audit", headers=auth("commissioner", region="london")).status_code == 403
    assert client.get("/audit", headers=OTHER_LEAD).json()["items"] == []
    assert client.get("/audit", params={"site": "croydon"}, headers=OTHER_LEAD).status_code == 403
    assert client.get("/audit", params={"site": "croydon"}, headers=ADMIN).json()["total"] >= 2
    assert client.get("/audit", params={"site": "kendal"}, headers=ADMIN).json()["total"] == 0
    bad = client.get("/audit", params={"since": "yesterday"}, headers=ADMIN)
    assert bad.status_code == 422 and "since" in bad.json()["detail"]


def test_the_desk_page_records_its_views_and_the_audit_page_shows_them(client, meeting):
    referral_id = client.post("/referrals", json=referral_body(), headers=KEYWORKER).json()["id"]
    client.cookies.set("fama_token", token_for("keyworker", "croydon"))
    assert "07812" in client.get(f"/desk/referrals/{referral_id}").text
    desk_views = [e for e in trail() if e.via == "desk"]
    assert desk_views and desk_views[0].action == "contact_viewed" and desk_views[0].actor_role == "keyworker"
    assert client.get("/desk/audit").status_code == 403

    client.cookies.set("fama_token", token_for("site_lead", "croydon"))
    page = client.get("/desk/audit")
    assert page.status_code == 200
    assert "Contact details viewed" in page.text and "Referral made" in page.text
    assert MOBILE_E164 not in page.text and EMAIL not in page.text
    assert client.get("/desk").text.count('href="/desk/audit"') == 1
    bad = client.get("/desk/audit", params={"referral": "not-an-id", "since": "24/11/2026"})
    assert bad.status_code == 400
    assert "Enter a referral" in bad.text and "Enter a date like" in bad.text


def test_the_scheduler_prunes_entries_past_the_retention_period(meeting, clean_state):
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
    with runtime.transaction() as session:
        for at in (old, dt.datetime.now(dt.UTC)):
            session.add(AuditEntry(at=at, actor="kw", actor_role="keyworker", site_id="croydon",
                                   referral_id=uuid.uuid4(), action="contact_viewed", detail="mobile", via="api"))
    proc = scheduler("referrals", env={**os.environ, "REFERRALS_AUDIT_RETENTION_DAYS": "7"}).start()
    try:
        wait_for(lambda: len(trail()) == 1, timeout=30, what="the old audit entry pruned")
    finally:
        proc.stop()
    assert trail()[0].at > old + dt.timedelta(days=9)
    assert audit.prune(retention_days=7) == 0
