"""Email one-click unsubscribe: List-Unsubscribe headers over real SMTP (aiosmtpd), GOV.UK
Notify's one_click_unsubscribe_url (the local Notify double), and a link that works without
signing in, with a token nobody can guess or forge."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from services.notifications import sending, service
from services.notifications.api import app
from services.notifications.models import OptOut, ReferralContact
from services.notifications.providers import SmtpProvider
from services.notifications.runtime import runtime
from services.notifications.wording import Message
from tests.services.notifications.support import (  # noqa: F401 (any_hour: a fixture)
    any_hour,
    by_kind,
    dev_messages,
    handle,
    make_due,
    meeting,
    meeting_event,
    outbox_events,
    referral_event,
    reminders,
)
from tests.services.notifications.test_providers import (  # noqa: F401 (fixtures)
    notify,  # noqa: F401
    provider,
    smtp,
    smtp_settings,
)

pytestmark = pytest.mark.usefixtures("clean_state", "any_hour")
client = TestClient(app)
EMAIL_ADDRESS = "client.42@example.org"
URL = "https://notifications.fama.example/unsubscribe/abc.def"
EMAIL = Message(channel="email", subject="Reminder: Tuesday", body="Reminder: your meeting is tomorrow.",
                unsubscribe_url=URL)


def emailed_referral():
    m = meeting()
    handle(meeting_event(m))
    event = referral_event(m, mobile=None, email=EMAIL_ADDRESS)
    handle(event)
    return event.parsed().referral_id


def test_smtp_email_carries_the_one_click_headers(smtp):  # noqa: F811
    controller, handler = smtp
    SmtpProvider(smtp_settings(controller)).send(reference="ref-1", to=EMAIL_ADDRESS, message=EMAIL)
    [msg] = handler.messages
    assert msg["List-Unsubscribe"] == f"<{URL}>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_notify_email_gets_the_one_click_unsubscribe_url(notify):  # noqa: F811
    provider(notify).send(reference="ref-2", to=EMAIL_ADDRESS, message=EMAIL)
    [sent] = notify.received
    assert sent["one_click_unsubscribe_url"] == URL


def test_every_email_sent_has_a_working_link_and_it_needs_no_sign_in():
    rid = emailed_referral()
    day_before = by_kind(rid)["day_before"]
    make_due([day_before.id])
    sending.dispatch_due()
    assert sending.send_reminder(reminder_id=day_before.id) == "sent"
    [message] = dev_messages(day_before.id)
    link = message.body.rsplit("Stop these emails: ", 1)[1].strip()
    path = link.removeprefix(runtime.settings.notifications_public_url.rstrip("/"))
    assert path.startswith("/unsubscribe/") and EMAIL_ADDRESS not in link and str(rid) not in link

    page = client.get(path)  # no bearer token, no cookie
    assert page.status_code == 200 and "Stop these emails" in page.text
    assert reminders(rid)[0].status != "cancelled"  # opening the link (a mail scanner) changes nothing

    done = client.post(path, data={"List-Unsubscribe": "One-Click"})  # what a mail client's one click sends
    assert done.status_code == 200 and "no more reminder emails" in done.text
    assert {r.status for r in reminders(rid) if r.id != day_before.id} == {"cancelled"}
    with runtime.sessions() as session:
        assert [o.channel for o in session.scalars(select(OptOut))] == ["email"]
        assert session.get(ReferralContact, rid).contact is None
    [event] = outbox_events("contact.opted_out")
    assert event["channel"] == "email" and [r["referral_id"] for r in event["referrals"]] == [str(rid)]
    assert client.post(path).status_code == 200  # again: nothing more
    assert len(outbox_events("contact.opted_out")) == 1


@pytest.mark.parametrize("token", ["x", "0" * 64, "0" * 64 + ".0123456789abcdef0123456789abcdef", "a" * 300, "\u0080",
                                   "é.é"])
def test_a_made_up_or_altered_link_is_refused(token):
    real = service.unsubscribe_token(service.contact_hash(EMAIL_ADDRESS, "email"))
    for bad in (token, real[:-1] + ("0" if real[-1] != "0" else "1")):
        assert client.get(f"/unsubscribe/{bad}").status_code == 404
        assert client.post(f"/unsubscribe/{bad}").status_code == 404
    with runtime.sessions() as session:
        assert session.scalars(select(OptOut)).all() == []
