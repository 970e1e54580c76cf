"""Contact details of referrals that ended long enough ago are erased, and the erasure recorded."""

from __future__ import annotations

import datetime as dt
import uuid

from fastapi.testclient import TestClient
from sqlalchemy import select, update

from services.referrals.api import app
from services.referrals.models import Referral
from services.referrals.runtime import runtime
from services.referrals.service import erase_ended_contacts
from shared.events import utcnow
from tests.services.referrals.conftest import PLAINTEXTS, raw_rows, referral_body
from tests.support.auth import auth
from tests.support.processes import wait_for

KEYWORKER = auth("keyworker", "croydon")


def make(client, reference: str, *, end: str | None = None) -> str:
    referral_id = client.post("/referrals", json=referral_body(client_reference=reference), headers=KEYWORKER).json()["id"]
    if end:
        response = client.post(f"/referrals/{referral_id}/transitions", json={"to": end, "reason": "test"},
                               headers=KEYWORKER)
        assert response.status_code == 200, response.text
    return referral_id


def set_ended(referral_id: str, days_ago: float) -> None:
    with runtime.transaction() as session:
        session.execute(update(Referral).where(Referral.id == uuid.UUID(referral_id))
                        .values(ended_at=utcnow() - dt.timedelta(days=days_ago)))


def contact_of(referral_id: str) -> tuple:
    with runtime.sessions() as session:
        row = session.get(Referral, uuid.UUID(referral_id))
        return row.mobile, row.email, row.contact_erased_at


def test_only_referrals_ended_beyond_retention_are_erased(meeting):
    client = TestClient(app)
    old = make(client, "CRY-0001", end="declined")
    recent = make(client, "CRY-0002", end="did-not-engage")
    active = make(client, "CRY-0003")
    set_ended(old, 31)
    set_ended(recent, 29)
    with runtime.transaction() as session:
        assert erase_ended_contacts(session, retention_days=30) == 1
    mobile, email, erased_at = contact_of(old)
    assert (mobile, email) == (None, None) and erased_at is not None
    assert contact_of(recent)[0] == "+447812345678"
    assert contact_of(active)[0] == "+447812345678"
    body = client.get(f"/referrals/{old}", headers=KEYWORKER).json()
    assert body["contact"]["erased_at"] is not None
    assert body["history"][-1]["action"] == "contact_erased"
    assert body["history"][-1]["by"] == "system:retention"
    assert body["status"] == "cancelled"  # the referral itself stays, for the counts
    # Running again finds nothing more to do.
    with runtime.transaction() as session:
        assert erase_ended_contacts(session, retention_days=30) == 0
    # A shorter retention reaches the recent one.
    with runtime.transaction() as session:
        assert erase_ended_contacts(session, retention_days=7) == 1
    assert contact_of(recent)[:2] == (None, None)


def test_scheduler_process_erases_with_the_configured_retention(meeting, processes):
    client = TestClient(app)
    ended = make(client, "CRY-0010", end="entered-in-error")
    set_ended(ended, 3)
    kept = make(client, "CRY-0011", end="declined")
    set_ended(kept, 1)
    scheduler = processes.scheduler("referrals", env={"REFERRALS_RETENTION_DAYS": "2"})
    wait_for(lambda: contact_of(ended)[2] is not None, timeout=15, what="the scheduler to erase contact details")
    assert contact_of(ended)[:2] == (None, None)
    assert contact_of(kept)[0] == "+447812345678"
    # The erased referral's ciphertext is gone from the raw row too, and nothing personal was logged.
    row = next(r for r in raw_rows("referrals") if str(r[0]) == ended)
    assert "gAAAA" not in " ".join(str(v) for v in row)
    scheduler.stop()
    log = scheduler.log()
    assert "contact_erasure" in log
    for plain in PLAINTEXTS:
        assert plain not in log


def sealed_in_outbox(referral_id: str) -> dict[str, str | None]:
    """The sealed contact each subscriber's referral.created row still holds."""
    t = runtime.outbox_table
    with runtime.sessions() as session:
        rows = session.execute(select(t.c.subscriber, t.c.body).where(t.c.event_type == "referral.created")).all()
    return {r.subscriber: r.body["payload"]["contact_ciphertext"] for r in rows
            if r.body["payload"]["referral_id"] == referral_id}


def test_entered_in_error_erases_the_contact_at_once_with_its_sealed_copies(meeting):
    client = TestClient(app)
    wrong, kept = make(client, "CRY-0020"), make(client, "CRY-0021")
    assert sealed_in_outbox(wrong)["notifications"] is not None and sealed_in_outbox(wrong)["directory"] is None
    response = client.post(f"/referrals/{wrong}/transitions", json={"to": "entered-in-error"}, headers=KEYWORKER)
    assert response.status_code == 200, response.text
    assert response.json()["contact"]["mobile"] is None and response.json()["contact"]["erased_at"] is not None
    assert [h["action"] for h in response.json()["history"]][-2:] == ["transition", "contact_erased"]
    assert contact_of(wrong)[:2] == (None, None)
    assert sealed_in_outbox(wrong) == {"notifications": None, "directory": None}
    assert sealed_in_outbox(kept)["notifications"] is not None  # another referral's event is untouched


def test_withdrawal_and_ending_clear_the_sealed_contact_from_the_outbox(meeting):
    client = TestClient(app)
    withdrawn, ended = make(client, "CRY-0030"), make(client, "CRY-0031", end="declined")
    assert client.post(f"/referrals/{withdrawn}/consent-withdrawal", headers=KEYWORKER).status_code == 200
    assert sealed_in_outbox(withdrawn)["notifications"] is None
    # Ended: notifications erases its copy now; referrals keeps its own until the retention period.
    assert sealed_in_outbox(ended)["notifications"] is None
    assert contact_of(ended)[0] == "+447812345678"
