"""The client's replies on the desk: kept encrypted, unread until seen, erased with the contact;
a YES/NO report confirmed in one click; START restoring consent; the Needs attention queue."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text, update

from services.referrals import service
from services.referrals.api import app
from services.referrals.handlers import HANDLERS
from services.referrals.models import ClientReply, Referral
from services.referrals.runtime import runtime
from services.referrals.schemas import ReferralIn
from shared.auth import issue_token
from shared.crypto import FieldCipher
from shared.events import ContactOptedIn, ContactOptedOut, Event, OptedOutReferral, ReplyReceived, utcnow
from shared.settings import ServiceSettings
from tests.services.referrals.conftest import publish_meeting
from tests.services.referrals.test_pages import Page, get
from tests.support.auth import auth

pytestmark = pytest.mark.usefixtures("clean_state")
KEYWORKER = auth("keyworker", "croydon")
client = TestClient(app)


def as_user(subject: str, role: str = "keyworker", site: str = "croydon") -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(ServiceSettings(), role=role, site=site, subject=subject)}"}


@pytest.fixture(autouse=True)
def meeting(clean_state):
    return publish_meeting()


def make_referral(reference="CRY-0042", *, by="dev-user", site="croydon", planned: dt.date | None = None) -> uuid.UUID:
    consent = {"to_reminders": True, "wording_version": service.CURRENT_CONSENT_WORDING}
    referral_in = ReferralIn(meeting_slug="croydon-smart-tuesday", client_reference=reference, mobile="07812 345678",
                             consent=consent)
    with runtime.transaction() as session:
        referral = service.create_referral(session, referral_in=referral_in, site_id=site, by=by)
        if planned is not None:
            referral.planned_date = planned
        return referral.id


def deliver(event: Event) -> bool:
    return runtime.handle(event.model_dump(mode="json"), HANDLERS)


def reply(referral_id, words: str, *, attendance=None, at: dt.datetime | None = None, reply_id=None) -> uuid.UUID:
    reply_id = reply_id or uuid.uuid4()
    sealed = FieldCipher(runtime.settings.contact_transit_keys).encrypt(words)
    deliver(Event.new("reply.received", ReplyReceived(
        reply_id=reply_id, referral_id=referral_id, site_id="croydon", fellowship="smart",
        received_at=at or utcnow(), attendance=attendance, text_ciphertext=sealed), producer="notifications"))
    return reply_id


def stored(reply_id) -> ClientReply:
    with runtime.sessions() as session:
        return session.get(ClientReply, reply_id)


def test_a_reply_is_kept_encrypted_and_unread_until_a_keyworker_of_the_site_sees_it():
    rid = make_referral()
    first = reply(rid, "Is it the side door? Thanks, Jo", at=utcnow() - dt.timedelta(hours=2))
    event_again = reply(rid, "Is it the side door? Thanks, Jo", reply_id=first)  # redelivered as a new event
    assert event_again == first
    with runtime.engine.connect() as conn:
        raw = conn.execute(text("SELECT text FROM client_replies")).scalars().all()
    assert len(raw) == 1 and "side door" not in raw[0]
    assert stored(first).text == "Is it the side door? Thanks, Jo"

    get(client, f"/desk/referrals/{rid}", headers=auth("admin"))  # an admin's look is not the keyworker's
    assert stored(first).seen_at is None
    page = get(client, f"/desk/referrals/{rid}")
    assert "Is it the side door? Thanks, Jo" in page.text and page.by_id(f"new-{first}") == "New"
    assert stored(first).seen_at is not None and stored(first).seen_by == "dev-user"
    assert not get(client, f"/desk/referrals/{rid}").has(f"new-{first}")


def test_confirming_a_yes_moves_the_stage_in_one_click_and_says_the_client_reported_it():
    rid = make_referral()
    report = reply(rid, "Yes I did thanks", attendance="attended")
    page = get(client, f"/desk/referrals/{rid}")
    assert "The client says they went to the meeting" in page.text and "Waiting for you to confirm" in page.text
    assert {"Confirm: went on their own", "Confirm: someone went with them", "Set aside"} <= set(page.buttons)
    done = client.post(f"/desk/referrals/{rid}/replies/{report}/confirmation", data={"accompanied": "yes"},
                       headers=KEYWORKER, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"].endswith("notice=report-confirmed")
    shown = client.get(f"/referrals/{rid}", headers=KEYWORKER).json()
    assert (shown["business_status"], shown["accompanied"]) == ("first-meeting-attended", True)
    # Nobody had planned the meeting: the one click plans it, then marks it attended.
    assert [h["to_stage"] for h in shown["history"]] == ["information-given", "first-meeting-planned",
                                                         "first-meeting-attended"]
    t = runtime.outbox_table
    with runtime.sessions() as session:
        bodies = session.scalars(select(t.c.body).where(t.c.event_type == "referral.status_changed",
                                                        t.c.subscriber == "directory").order_by(t.c.id)).all()
    assert [(b["payload"]["business_status"], b["payload"]["client_reported"]) for b in bodies] == [
        ("first-meeting-planned", None), ("first-meeting-attended", True)]
    assert stored(report).report_state == "confirmed"
    again = client.post(f"/desk/referrals/{rid}/replies/{report}/confirmation", data={"accompanied": "yes"},
                        headers=KEYWORKER)
    assert again.status_code == 409 and "already been confirmed" in Page(again).text


def test_a_no_confirmed_ends_the_referral_and_a_report_set_aside_changes_nothing():
    went_not, doubtful = make_referral("CRY-0001"), make_referral("CRY-0002")
    no = reply(went_not, "No I didn't", attendance="not_attended")
    maybe = reply(doubtful, "yes", attendance="attended")
    assert client.post(f"/desk/referrals/{went_not}/replies/{no}/confirmation", headers=KEYWORKER).status_code == 200
    assert client.get(f"/referrals/{went_not}", headers=KEYWORKER).json()["business_status"] == "did-not-engage"
    assert client.post(f"/desk/referrals/{doubtful}/replies/{maybe}/dismissal", headers=KEYWORKER).status_code == 200
    assert client.get(f"/referrals/{doubtful}", headers=KEYWORKER).json()["business_status"] == "information-given"
    assert stored(maybe).report_state == "dismissed"
    # A YES needs the one answer the page asks; a made-up or other referral's reply is refused.
    other = reply(doubtful, "yes", attendance="attended")
    response = client.post(f"/desk/referrals/{doubtful}/replies/{other}/confirmation", headers=KEYWORKER)
    assert response.status_code == 422 and "went with the client" in Page(response).text
    for bad in ("not-an-id", str(uuid.uuid4()), str(no)):
        response = client.post(f"/desk/referrals/{doubtful}/replies/{bad}/confirmation", headers=KEYWORKER)
        assert response.status_code == 409 and "not the client" in Page(response).text
    response = client.post(f"/desk/referrals/{doubtful}/replies/{other}/confirmation",
                           headers=auth("keyworker", "birmingham"), data={"accompanied": "no"})
    assert response.status_code == 403


def test_replies_are_erased_with_the_contact_and_none_kept_after():
    rid = make_referral()
    words = reply(rid, "My number changes next week")
    assert client.post(f"/referrals/{rid}/consent-withdrawal", headers=KEYWORKER).status_code == 200
    assert stored(words).text is None
    late = reply(rid, "still there?")
    assert stored(late).text is None
    assert "deleted with the client" in get(client, f"/desk/referrals/{rid}").text


def test_start_restores_the_consent_a_stop_withdrew():
    rid = make_referral()
    listed = [OptedOutReferral(referral_id=rid, site_id="croydon", fellowship="smart")]
    deliver(Event.new("contact.opted_out", ContactOptedOut(channel="sms", contact_hash="ab" * 32, referrals=listed),
                      producer="notifications"))
    assert client.get(f"/referrals/{rid}", headers=KEYWORKER).json()["consent"]["withdrawn_at"] is not None
    deliver(Event.new("contact.opted_in", ContactOptedIn(channel="sms", contact_hash="ab" * 32, referrals=listed),
                      producer="notifications"))
    shown = client.get(f"/referrals/{rid}", headers=KEYWORKER).json()
    assert shown["consent"]["withdrawn_at"] is None and shown["history"][-1]["action"] == "opted_in"
    assert "Client opted back in (texted START)" in get(client, f"/desk/referrals/{rid}").text


def test_the_work_queue_counts_what_needs_attention_oldest_first():
    today = utcnow().date()
    mine_old = make_referral("CRY-0001", by="kw-1", planned=today - dt.timedelta(days=9))
    mine_new = make_referral("CRY-0002", by="kw-1", planned=today - dt.timedelta(days=2))
    theirs = make_referral("CRY-0003", by="kw-2", planned=today + dt.timedelta(days=5))
    elsewhere = make_referral("BHM-0001", by="kw-1", site="birmingham", planned=today - dt.timedelta(days=3))
    reply(theirs, "what time is it?", at=utcnow() - dt.timedelta(hours=5))
    reply(mine_new, "see you there", at=utcnow() - dt.timedelta(hours=1))
    reply(mine_old, "yes", attendance="attended", at=utcnow() - dt.timedelta(hours=3))
    with runtime.transaction() as session:
        session.execute(update(Referral).where(Referral.id == theirs).values(
            contact_unreachable_at=utcnow(), contact_unreachable_reason="sms: provider: permanent-failure"))
    deliver(Event.new("contact.opted_out", ContactOptedOut(channel="sms", contact_hash="cd" * 32, referrals=[
        OptedOutReferral(referral_id=mine_new, site_id="croydon", fellowship="smart")]), producer="notifications"))

    lead = get(client, "/desk/queue", headers=as_user("lead-1", "site_lead"))  # the whole site
    counts = {kind: lead.by_id(f"count-{kind}") for kind in service.QUEUE_KINDS}
    assert counts == {"reports": "1", "replies": "3", "meeting_changed": "0", "no_outcome": "2", "unreachable": "1",
                      "opted_out": "1"}
    replies = lead.by_id("queue-replies")
    assert replies.index("CRY-0003") < replies.index("CRY-0001") < replies.index("CRY-0002")  # oldest first
    no_outcome = lead.by_id("queue-no_outcome")
    assert no_outcome.index("CRY-0001") < no_outcome.index("CRY-0002") and "BHM-0001" not in lead.text

    mine = get(client, "/desk/queue", headers=as_user("kw-1"))  # a keyworker starts with their own
    assert mine.by_id("count-replies") == "2" and "CRY-0003" not in mine.text
    whole = get(client, "/desk/queue?mine=0", headers=as_user("kw-1"))
    assert whole.by_id("count-replies") == "3"
    one = get(client, "/desk/queue?mine=0&client=cry-0002", headers=as_user("kw-1"))
    assert {k: one.by_id(f"count-{k}") for k in service.QUEUE_KINDS} == {
        "reports": "0", "replies": "1", "meeting_changed": "0", "no_outcome": "1", "unreachable": "0", "opted_out": "1"}
    bad = get(client, "/desk/queue?client=%3Cscript%3E", headers=as_user("kw-1"), status=400)
    assert "letters, digits and hyphens" in bad.text
    get(client, f"/desk/referrals/{mine_new}", headers=as_user("kw-1"))  # read: off the unread list
    assert get(client, "/desk/queue?mine=0", headers=as_user("kw-1")).by_id("count-replies") == "2"
    assert elsewhere  # another site's referral never shows
