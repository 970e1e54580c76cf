"""The client's number and email never appear in clear: not in the database rows, not on the
broker, not in the logs of the real API and worker processes."""

from __future__ import annotations

import socket
import uuid

import httpx
import pytest
from fastapi.testclient import TestClient

from services.referrals.api import app
from services.referrals.runtime import runtime
from shared.crypto import FieldCipher
from shared.events import ContactDetails, ContactOptedOut, Event, OptedOutReferral, ReminderFact
from tests.services.referrals.conftest import EMAIL, MOBILE, MOBILE_E164, PLAINTEXTS, raw_rows, referral_body
from tests.support.auth import auth
from tests.support.broker import queued_messages
from tests.support.events import signed
from tests.support.processes import api_server, wait_for

KEYWORKER = auth("keyworker", "croydon")


def assert_no_plaintext(text: str, where: str) -> None:
    for plain in (*PLAINTEXTS, MOBILE_E164, EMAIL):
        assert plain not in text, f"{plain!r} found in {where}"


def test_database_rows_hold_only_ciphertext(meeting):
    client = TestClient(app)
    created = client.post("/referrals", json=referral_body(), headers=KEYWORKER).json()
    client.post(f"/referrals/{created['id']}/transitions", json={"to": "contact-arranged"}, headers=KEYWORKER)
    for table in ("referrals", "referral_history", "referral_reminders", "outbox", "inbox", "meeting_replica"):
        assert_no_plaintext(repr(raw_rows(table)), f"table {table}")
    row = next(r for r in raw_rows("referrals") if str(r[0]) == created["id"])
    ciphertexts = [v for v in row if isinstance(v, str) and v.startswith("gAAAA")]
    assert len(ciphertexts) == 2  # mobile and email, as Fernet tokens
    at_rest = FieldCipher(runtime.settings.encryption_keys)
    assert sorted(at_rest.decrypt(c) for c in ciphertexts) == sorted([MOBILE_E164, EMAIL])


def test_broker_messages_carry_contact_only_sealed(meeting, redis_client, redis_prefix):
    created = TestClient(app).post("/referrals", json=referral_body(), headers=KEYWORKER).json()
    for queue in ("notifications.events", "directory.events"):
        messages = queued_messages(redis_client, redis_prefix, queue)
        assert [m["args"][0]["type"] for m in messages] == ["referral.created"]
        assert messages[0]["args"][0]["payload"]["referral_id"] == created["id"]
        assert_no_plaintext(messages[0]["raw"], f"the {queue} message")
        sealed = messages[0]["args"][0]["payload"]["contact_ciphertext"]
        if queue == "directory.events":
            assert sealed is None  # the directory never needs the contact: it does not get it, even sealed
            continue
        # Only the transit key opens it (not the at-rest key).
        contact = ContactDetails.unseal(FieldCipher(runtime.settings.contact_transit_keys), sealed)
        assert (contact.mobile, contact.email) == (MOBILE_E164, EMAIL)
        with pytest.raises(ValueError):
            FieldCipher(runtime.settings.encryption_keys).decrypt(sealed)
    assert queued_messages(redis_client, redis_prefix, "referrals.events") == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_api_and_worker_logs_hold_no_contact_details(meeting, processes):
    port = _free_port()
    server = processes.add(api_server("referrals", port))
    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base, headers=KEYWORKER, timeout=10) as http:
        response = http.post("/referrals", json=referral_body())
        assert response.status_code == 201, response.text
        referral_id = response.json()["id"]
        assert http.get(f"/referrals/{referral_id}").json()["contact"]["mobile"] == MOBILE_E164
        # Refused input with contact details in it is not echoed into the logs either.
        bad = http.post("/referrals", json=referral_body(mobile="020 7946 0018", email="eleanor.rigby@"))
        assert bad.status_code == 422
        assert "020 7946 0018" not in bad.text
        bad = http.post("/referrals", json=referral_body(client_reference=MOBILE))
        assert bad.status_code == 422
        assert MOBILE not in bad.text

    worker = processes.worker("referrals")
    events = [
        Event.new("reminder.failed", ReminderFact(reminder_id=uuid.uuid4(), referral_id=referral_id, site_id="croydon",
                                                  fellowship="smart", kind="day_before", channel="sms",
                                                  reason="permanent-failure"), producer="notifications"),
        Event.new("contact.opted_out", ContactOptedOut(channel="sms", contact_hash="cd" * 32, referrals=[
            OptedOutReferral(referral_id=referral_id, site_id="croydon", fellowship="smart")]), producer="notifications"),
    ]
    for event in events:
        runtime.outbox.send("referrals", signed(event))
    client = TestClient(app)

    def handled():
        body = client.get(f"/referrals/{referral_id}", headers=KEYWORKER).json()
        return body["contact"]["unreachable"] and body["consent"]["withdrawn_at"]

    wait_for(handled, timeout=20, what="the worker to apply both events")
    wait_for(lambda: worker.log().count("event.processed") >= 2, timeout=10, what="the worker's log lines")
    server.stop()
    worker.stop()
    api_log, worker_log = server.log(), worker.log()
    assert "referral.created" in api_log and "POST /referrals" in api_log  # the log was captured
    assert_no_plaintext(api_log, "the API log")
    assert_no_plaintext(worker_log, "the worker log")
