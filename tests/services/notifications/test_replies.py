"""Texts from clients through the real inbound-SMS callback (docs/TEXT-REPLIES.md): keywords
as whole texts, replies sealed to the desk, YES/NO after the follow-up as reports, START, HELP,
and bad input answered clearly, changing nothing twice."""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from services.notifications import sending, service
from services.notifications.api import app
from services.notifications.models import InboundMessage, OptOut, ReferralContact
from services.notifications.runtime import runtime
from shared.crypto import FieldCipher
from shared.events import Event, ReferralConsentWithdrawn, ReferralStatusChanged, utcnow
from tests.services.notifications.support import (  # noqa: F401 (any_hour: a fixture)
    any_hour,
    by_kind,
    dev_messages,
    handle,
    make_due,
    meeting,
    meeting_event,
    meeting_over,
    outbox_events,
    referral_event,
    reminders,
)

pytestmark = pytest.mark.usefixtures("clean_state", "any_hour")
client = TestClient(app)
NOTIFY = {"Authorization": f"Bearer {runtime.settings.callback_token}"}
NUMBER = "447700900123"  # as Notify gives it; the referrals' default mobile is +447700900123
DOCS = Path(__file__).parents[3] / "docs" / "TEXT-REPLIES.md"


def inbound(message: str, number: str = NUMBER, message_id: str | None = None):
    body = {"id": message_id or str(uuid.uuid4()), "source_number": number, "destination_number": "07700900000",
            "message": message, "date_received": "2026-11-21T10:00:00.000000Z"}
    # As JSON text with \u escapes, so even a lone surrogate travels as Notify could send it.
    return client.post("/callbacks/inbound-sms", content=json.dumps(body), headers={
        **NOTIFY, "Content-Type": "application/json"})


def referred(**kw) -> uuid.UUID:
    m = meeting()
    handle(meeting_event(m))
    event = referral_event(m, **kw)
    handle(event)
    return event.parsed().referral_id


def send_due(kind: str, referral_id: uuid.UUID) -> str:
    """Send the referral's reminder of ``kind`` now through the real dispatcher and sender."""
    row = by_kind(referral_id)[kind]
    if kind == "follow_up":
        meeting_over([row.id])
    make_due([row.id])
    sending.dispatch_due()
    return sending.send_reminder(reminder_id=row.id)


def outbox_rows(event_type: str):
    t = runtime.outbox_table
    with runtime.sessions() as session:
        return session.execute(select(t.c.subscriber, t.c.body).where(t.c.event_type == event_type)
                               .order_by(t.c.id)).all()


def docs_rows() -> list[tuple[str, str]]:
    """(example, keyword) for every example in the rules table of docs/TEXT-REPLIES.md."""
    section = DOCS.read_text().split("## The rules")[1].split("## ")[0]
    rows = [line.split("|")[1:3] for line in section.splitlines() if line.startswith("| `")]
    return [(example, keyword.strip()) for examples, keyword in rows for example in re.findall(r"`([^`]+)`", examples)]


def test_the_docs_table_has_every_kind_of_text():
    assert {keyword for _, keyword in docs_rows()} == {"stop", "start", "help", "yes", "no", "reply"}
    assert len(docs_rows()) >= 40


@pytest.mark.parametrize(("text", "keyword"), docs_rows())
def test_every_example_in_the_docs_table_is_classified_as_documented(text, keyword):
    assert service.classify(text) == keyword


@pytest.mark.parametrize("text", ["STOP", "Stop please", "STOP!!", "stop.", "ＳＴＯＰ", "QUIT", "Please stop texting me"])
def test_stop_keywords_opt_out_and_sentences_do_not(text):
    rid = referred()
    for sentence in ("Please don't cancel my lift", "stayed to the end", "the bus doesn't stop near the hall"):
        assert inbound(sentence).json() == {"outcome": "reply passed on"}, sentence
    assert {r.status for r in reminders(rid) if r.kind != "reply_ack"} == {"created"}
    assert outbox_events("contact.opted_out") == []

    assert inbound(text).json() == {"outcome": "opted out"}
    assert {r.status for r in reminders(rid) if r.kind != "reply_ack"} == {"cancelled"}
    [event] = outbox_events("contact.opted_out")
    assert [r["referral_id"] for r in event["referrals"]] == [str(rid)]


def test_start_opts_back_in_only_while_consent_stands():
    rid = referred()
    assert inbound("STOP").json() == {"outcome": "opted out"}
    assert inbound("Start again please").json() == {"outcome": "opted in"}
    with runtime.sessions() as session:
        contact = session.get(ReferralContact, rid)
        assert (contact.active, contact.contact) == (True, "+447700900123")
        assert session.scalars(select(OptOut)).all() == []
    planned = by_kind(rid)
    assert {"day_before", "hours_before", "follow_up", "opted_in"} <= set(planned)
    assert send_due("opted_in", rid) == "sent"
    [told] = [m for m in dev_messages() if m.reference == str(planned["opted_in"].id)]
    assert told.body.startswith("You will get reminders about your meeting again.")
    [event] = outbox_events("contact.opted_in")
    assert [r["referral_id"] for r in event["referrals"]] == [str(rid)]
    assert inbound("START").json() == {"outcome": "not opted out"}

    # Consent withdrawn at the desk, or the referral ended: START brings nothing back.
    handle(Event.new("referral.consent_withdrawn", ReferralConsentWithdrawn(
        referral_id=rid, site_id="croydon", fellowship="smart"), producer="referrals"))
    ended = referred(mobile="+447700900555")
    assert inbound("STOP", number="447700900555").json() == {"outcome": "opted out"}
    handle(Event.new("referral.status_changed", ReferralStatusChanged(
        referral_id=ended, site_id="croydon", meeting_slug="croydon-tuesday", fellowship="smart",
        from_status="requested", to_status="cancelled", reason="declined"), producer="referrals"))
    assert inbound("STOP").json() == {"outcome": "opted out"}
    for number in (NUMBER, "447700900555"):
        assert inbound("UNSTOP", number=number).json() == {"outcome": "not opted in: no consent"}
    with runtime.sessions() as session:
        assert len(session.scalars(select(OptOut)).all()) == 2
    assert len(outbox_events("contact.opted_in")) == 1


def test_help_is_answered_with_who_is_texting():
    rid = referred()
    assert inbound("help").json() == {"outcome": "help sent"}
    assert send_due("help", rid) == "sent"
    [answer] = [m for m in dev_messages() if m.reference == str(by_kind(rid)["help"].id)]
    assert answer.body == ("These texts are from FAMA reminders, sent for your keyworker about your meeting. For "
                           "anything else, contact your keyworker. Reply STOP to stop these messages")
    assert outbox_events("reply.received") == []  # a keyword is not a message for the keyworker


def test_a_reply_reaches_the_desk_sealed_and_is_acknowledged_once_a_day():
    rid = referred()
    words = "Running late, is there parking near the hall? 🚗"
    assert inbound(words).json() == {"outcome": "reply passed on"}
    assert inbound("see you there").json() == {"outcome": "reply passed on"}
    rows = outbox_rows("reply.received")
    assert [r.subscriber for r in rows] == ["referrals", "referrals"]  # never to the directory
    first = rows[0].body
    assert words not in str(first) and "parking" not in str(first)  # sealed
    opened = FieldCipher(runtime.settings.contact_transit_keys).decrypt(first["payload"]["text_ciphertext"])
    assert opened == words
    assert (first["payload"]["referral_id"], first["payload"]["attendance"]) == (str(rid), None)
    assert outbox_events("attendance.reported") == []
    # One acknowledgement, however many replies that day.
    acks = [r for r in reminders(rid) if r.kind == "reply_ack"]
    assert len(acks) == 1
    assert send_due("reply_ack", rid) == "sent"
    [ack] = [m for m in dev_messages() if m.reference == str(acks[0].id)]
    assert ack.body == "Thank you. Your message has been passed to your keyworker. Reply STOP to stop these messages"
    # The sealed text goes once referrals confirms delivery, and at once when the contact is erased.
    handle(Event.new("referral.consent_withdrawn", ReferralConsentWithdrawn(
        referral_id=rid, site_id="croydon", fellowship="smart"), producer="referrals"))
    assert [r.body["payload"]["text_ciphertext"] for r in outbox_rows("reply.received")] == [None, None]


def test_yes_or_no_after_the_follow_up_is_a_report_and_before_it_a_reply():
    rid = referred()
    other = referred(mobile="+447700900777")
    assert inbound("YES").json() == {"outcome": "reply passed on"}  # no follow-up yet: not a report
    assert send_due("follow_up", rid) == "sent"
    follow_up = [m for m in dev_messages() if m.reference == str(by_kind(rid)["follow_up"].id)][0]
    assert "Did you get there? Reply YES or NO." in follow_up.body
    assert inbound("Yes I did thanks").json() == {"outcome": "attendance reported"}
    assert send_due("follow_up", other) == "sent"
    assert inbound("couldn't make it", number="447700900777").json() == {"outcome": "attendance reported"}
    assert inbound("Yes but not sure about next week").json() == {"outcome": "reply passed on"}
    payloads = [r.body["payload"] for r in outbox_rows("reply.received")]
    assert [p["attendance"] for p in payloads] == [None, "attended", "not_attended", None]
    reports = outbox_rows("attendance.reported")
    assert [(r.subscriber, r.body["payload"]["referral_id"], r.body["payload"]["attendance"]) for r in reports] == [
        ("directory", str(rid), "attended"), ("directory", str(other), "not_attended")]
    assert "text_ciphertext" not in reports[0].body["payload"]


def test_bad_input_is_answered_clearly_and_changes_nothing_twice():
    rid = referred()
    for body, words in (("", "empty"), ("   \n ", "empty"), ("\u200b\u200b", "empty"), ("x" * 2000, "1600"),
                        ("\ud800 stop", "Unicode")):
        response = inbound(body)
        assert response.status_code == 422 and words.lower() in response.json()["detail"].lower(), (body[:5], response.text)
    response = inbound("STOP", number="not a number")
    assert response.status_code == 422 and "source_number" in response.json()["detail"]
    assert inbound("hello", number="447700900999").json() == {"outcome": "unknown sender"}
    assert inbound("Ｈｅｌｌｏ\x00 ça va? Привет").json() == {"outcome": "reply passed on"}
    text = FieldCipher(runtime.settings.contact_transit_keys).decrypt(
        outbox_rows("reply.received")[0].body["payload"]["text_ciphertext"])
    assert text == "Ｈｅｌｌｏ ça va? Привет"  # control characters dropped, the rest kept as written
    with runtime.sessions() as session:
        assert len(session.scalars(select(InboundMessage)).all()) == 2  # the two answered 200
    assert {r.status for r in reminders(rid) if r.kind != "reply_ack"} == {"created"}


def test_a_replayed_callback_changes_nothing_twice():
    rid = referred()
    once = str(uuid.uuid4())
    assert inbound("Is it the side door?", message_id=once).json() == {"outcome": "reply passed on"}
    assert inbound("Is it the side door?", message_id=once).json() == {"outcome": "already received"}
    assert len(outbox_rows("reply.received")) == 1
    stop = str(uuid.uuid4())
    assert inbound("STOP", message_id=stop).json() == {"outcome": "opted out"}
    assert inbound("START").json() == {"outcome": "opted in"}
    assert inbound("STOP", message_id=stop).json() == {"outcome": "already received"}  # the replay stops nothing
    with runtime.sessions() as session:
        assert session.get(ReferralContact, rid).active is True
    assert len(outbox_events("contact.opted_out")) == 1


def test_the_confirmation_goes_soon_after_the_referral_once():
    rid = referred()
    confirmation = by_kind(rid)["confirmation"]
    soon = utcnow() + dt.timedelta(minutes=runtime.settings.confirmation_delay_minutes)
    assert abs(confirmation.due_at - soon) < dt.timedelta(minutes=1)
    assert send_due("confirmation", rid) == "sent"
    [message] = [m for m in dev_messages() if m.reference == str(confirmation.id)]
    assert message.body.startswith("Hello from FAMA reminders. Your keyworker asked us to text you reminders about "
                                   "your meeting on ")
    assert message.body.endswith("Reply HELP for help. Reply STOP to stop these messages")
    assert "SMART" not in message.body and "Recovery" not in message.body  # discreet


def test_a_deployment_can_turn_the_confirmation_off(monkeypatch):
    monkeypatch.setattr(runtime.settings, "confirmation_at_referral", False)
    assert set(by_kind(referred())) == {"day_before", "hours_before", "follow_up"}
