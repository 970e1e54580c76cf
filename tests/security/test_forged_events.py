"""Writing to Redis is not enough to change anyone's data: forged and tampered events are refused.

An attacker with access to the broker pushes hand-made events onto the referrals queue with a
real Celery client, as any Redis client could. A real referrals worker refuses them (no effect,
no inbox row, a log line and a count) and acknowledges them (nothing loops), while events
signed by their real producer, with the current key or with the previous one still listed,
go through.
"""

from __future__ import annotations

import json
import uuid

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from services.notifications.runtime import runtime as notifications
from services.referrals.api import app as referrals_app
from services.referrals.handlers import HANDLERS
from services.referrals.models import meeting_replica
from services.referrals.runtime import runtime as referrals
from shared import queues
from shared.celery_app import make_celery
from shared.events import ContactOptedOut, Event, MeetingSnapshot, OptedOutReferral, ReminderFact
from shared.settings import DEV_EVENT_KEYS, ServiceSettings
from tests.support.auth import auth
from tests.support.broker import queued_messages
from tests.support.events import signed
from tests.support.processes import wait_for

pytestmark = pytest.mark.usefixtures("clean_state")

KEYWORKER = auth("keyworker", "croydon")
NEW_KEY = "notifications-event-key-2026-12-rotated-in"
# The worker has rotated: notifications now signs with NEW_KEY; the old (dev) key is still listed.
ROTATED = {"NOTIFICATIONS_EVENT_KEYS": f"{NEW_KEY},{DEV_EVENT_KEYS['notifications']}"}
MEETING = MeetingSnapshot(slug="croydon-smart-tuesday", name="SMART Recovery Croydon", fellowship="smart", day=2,
                          time="14:00", timezone="Europe/London", site_id="croydon")


def make_referral(mobile: str) -> str:
    body = {"meeting_slug": MEETING.slug, "support": "accompanied_by_peer", "client_reference": "CRY-0042",
            "mobile": mobile, "consent": {"to_reminders": True, "wording_version": "2025-01"}}
    response = TestClient(referrals_app).post("/referrals", json=body, headers=KEYWORKER)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def shown(referral_id: str) -> dict:
    return TestClient(referrals_app).get(f"/referrals/{referral_id}", headers=KEYWORKER).json()


def opted_out(*referral_ids: str) -> Event:
    return Event.new("contact.opted_out", ContactOptedOut(channel="sms", contact_hash="ab" * 32, referrals=[
        OptedOutReferral(referral_id=uuid.UUID(i), site_id="croydon", fellowship="smart") for i in referral_ids]),
        producer="notifications")


def refusals(worker) -> list[dict]:
    lines = []
    for line in worker.log().splitlines():
        if '"event.refused"' in line:
            lines.append(json.loads(line[line.index("{"):]))
    return lines


def inbox_ids() -> set[str]:
    with referrals.sessions() as session:
        return {str(i) for i in session.scalars(select(referrals.inbox_table.c.event_id))}


def test_forged_and_tampered_events_on_the_broker_change_nothing(processes, redis_client, redis_prefix):
    assert referrals.handle(signed(Event.new("meeting.published", MEETING, producer="directory")), HANDLERS)
    victim, other = make_referral("07812 345678"), make_referral("07812 345679")
    worker = processes.worker("referrals", env=ROTATED)

    # The attacker's own Celery client on the same Redis: any message a service could send.
    attacker = make_celery("attacker", ServiceSettings())

    def push(bodies: list) -> None:
        if len(bodies) == 1:
            attacker.send_task(queues.event_task("referrals"), args=[bodies[0]], queue=queues.REFERRALS_EVENTS)
        else:
            attacker.send_task(queues.events_batch_task("referrals"), args=[bodies], queue=queues.REFERRALS_EVENTS)

    hand_made = opted_out(victim).model_dump(mode="json")
    guessed = signed(opted_out(victim), keys="notifications-key-guessed-by-the-attacker")
    moved = Event.new("meeting.updated", MEETING.model_copy(update={"time": "03:00", "active": False}),
                      producer="directory")
    forged_move = signed(moved, keys="directory-key-guessed-by-the-attacker")
    as_directory = {**signed(opted_out(victim)), "producer": "directory"}
    forgeries = [hand_made, guessed, forged_move, as_directory]
    for body in forgeries:
        push([body])
    push([hand_made, forged_move])  # a forged batch too

    # A real event from notifications' outbox (signed with the old key, still listed second)...
    with notifications.transaction() as session:
        real = notifications.outbox.record(session, "contact.opted_out", opted_out(other).parsed())
    t = notifications.outbox_table
    with notifications.sessions() as session:
        real_body = session.scalar(select(t.c.body).where(t.c.event_id == real.event_id, t.c.subscriber == "referrals"))
    # ...and a tampered copy of it, aimed at the victim.
    tampered = {**real_body, "event_id": str(uuid.uuid4()),
                "payload": {**real_body["payload"], "referrals": opted_out(victim).payload["referrals"]}}
    push([tampered])
    # An event signed with the new key goes through as well.
    failed = Event.new("reminder.failed", ReminderFact(
        reminder_id=uuid.uuid4(), referral_id=uuid.UUID(other), site_id="croydon", fellowship="smart", kind="day_before",
        channel="sms", reason="permanent-failure"), producer="notifications")
    push([signed(failed, keys=NEW_KEY)])

    wait_for(lambda: len(refusals(worker)) >= 7, timeout=120, what="the worker to refuse the seven forgeries")
    wait_for(lambda: shown(other)["consent"]["withdrawn_at"] and shown(other)["contact"]["unreachable"], timeout=120,
             what="the genuine events (old and new key) to be applied")
    wait_for(lambda: queued_messages(redis_client, redis_prefix, queues.REFERRALS_EVENTS) == []
             and not redis_client.hlen(f"{redis_prefix}unacked"), timeout=60, what="every message acknowledged")

    # The victim keeps consent and mobile; the meeting replica is untouched.
    body = shown(victim)
    assert body["consent"]["to_reminders"] is True and body["consent"]["withdrawn_at"] is None
    assert body["contact"]["mobile"] == "+447812345678" and body["contact"]["erased_at"] is None
    assert [h["action"] for h in body["history"]] == ["created"]
    with referrals.sessions() as session:
        snapshot = session.scalar(select(meeting_replica.c.snapshot))
        assert session.scalar(select(func.count()).select_from(meeting_replica)) == 1
    assert (snapshot["time"], snapshot["active"]) == ("14:00", True)
    # No inbox row for any refused event; the genuine ones are there.
    refused_ids = {str(b["event_id"]) for b in [*forgeries, tampered]}
    assert inbox_ids() & refused_ids == set()
    assert {str(real.event_id), str(failed.event_id)} <= inbox_ids()
    # Each refusal was logged with its reason, and never with the payload.
    reasons = sorted(line["reason"] for line in refusals(worker))
    assert reasons == sorted(["bad_signature"] * 6 + ["wrong_producer"])
    assert all("payload" not in line and "referrals" not in line for line in refusals(worker))
    assert len(refusals(worker)) == 7  # acknowledged: not delivered again


def test_a_refused_event_is_counted():
    def count(reason: str) -> float:
        return REGISTRY.get_sample_value("fama_events_refused_total",
                                         {"consumer": "referrals", "reason": reason}) or 0.0

    before = count("bad_signature"), count("wrong_producer")
    assert referrals.refuses(opted_out(str(uuid.uuid4())).model_dump(mode="json")) == "bad_signature"
    assert referrals.refuses({**signed(opted_out(str(uuid.uuid4()))), "producer": "directory"}) == "wrong_producer"
    assert referrals.refuses(signed(opted_out(str(uuid.uuid4())))) is None
    assert (count("bad_signature"), count("wrong_producer")) == (before[0] + 1, before[1] + 1)
