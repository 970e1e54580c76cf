"""Providers against real local servers: a GOV.UK Notify API double over HTTP, and aiosmtpd."""

from __future__ import annotations

import socket
import uuid

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Message as MessageHandler

from services.notifications.config import Settings
from services.notifications.providers import NotifyProvider, PermanentFailure, SmtpProvider, TemporaryFailure
from services.notifications.wording import Message
from tests.services.notifications.notify_server import API_KEY, NotifyServer

SMS_TEMPLATE, EMAIL_TEMPLATE = str(uuid.uuid4()), str(uuid.uuid4())
SMS = Message(channel="sms", body="Reminder: your meeting is tomorrow. Reply STOP to stop these messages")
EMAIL = Message(channel="email", subject="Reminder: Tuesday", body="Reminder: your meeting is tomorrow.")


@pytest.fixture
def notify():
    with NotifyServer() as server:
        yield server


def provider(server, **kw) -> NotifyProvider:
    values = {"notify_api_key": API_KEY, "notify_base_url": server.url, "notify_sms_template_id": SMS_TEMPLATE,
              "notify_email_template_id": EMAIL_TEMPLATE}
    values.update(kw)
    return NotifyProvider(Settings(**values))


def test_notify_sms_and_email(notify):
    p = provider(notify)
    sms_id = p.send(reference="ref-1", to="+447700900123", message=SMS).provider_ref
    email_id = p.send(reference="ref-2", to="client@example.org", message=EMAIL).provider_ref
    sms, email = notify.received
    assert sms == {"id": sms_id, "kind": "sms", "phone_number": "+447700900123", "template_id": SMS_TEMPLATE,
                   "personalisation": {"body": SMS.body}, "reference": "ref-1"}
    assert email["id"] == email_id and email["email_address"] == "client@example.org"
    assert email["personalisation"] == {"subject": "Reminder: Tuesday", "body": EMAIL.body}
    assert p.lookup("ref-1") == sms_id
    assert p.lookup("ref-unknown") is None


@pytest.mark.parametrize("status", [429, 500])
def test_notify_rate_limit_and_server_errors_are_temporary(notify, status):
    notify.always = status
    with pytest.raises(TemporaryFailure, match=str(status)):
        provider(notify).send(reference="r", to="+447700900123", message=SMS)


def test_notify_bad_request_is_permanent(notify):
    notify.failures = [400]
    with pytest.raises(PermanentFailure, match="team-only API key"):
        provider(notify).send(reference="r", to="+447700900123", message=SMS)


def test_notify_checks_the_jwt(notify):
    wrong = f"fama_test-{uuid.uuid4()}-{uuid.uuid4()}"
    with pytest.raises(PermanentFailure, match="403"):
        provider(notify, notify_api_key=wrong).send(reference="r", to="+447700900123", message=SMS)
    assert notify.received == []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_notify_unreachable_is_temporary():
    port = free_port()
    p = NotifyProvider(Settings(notify_api_key=API_KEY, notify_base_url=f"http://127.0.0.1:{port}",
                                notify_sms_template_id=SMS_TEMPLATE))
    with pytest.raises(TemporaryFailure, match="unreachable"):
        p.send(reference="r", to="+447700900123", message=SMS)


class Refusing:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if address.startswith("nobody@"):
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"


class Collecting(Refusing, MessageHandler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def handle_message(self, message):
        self.messages.append(message)


@pytest.fixture
def smtp():
    handler = Collecting()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller, handler
    controller.stop()


def smtp_settings(controller) -> Settings:
    return Settings(smtp_host="127.0.0.1", smtp_port=controller.port,
                    smtp_from="FAMA <reminders@fama.example>")


def test_smtp_email(smtp):
    controller, handler = smtp
    SmtpProvider(smtp_settings(controller)).send(reference="ref-9", to="client@example.org", message=EMAIL)
    [msg] = handler.messages
    assert msg["To"] == "client@example.org" and msg["Subject"] == "Reminder: Tuesday"
    assert msg["X-FAMA-Reference"] == "ref-9"
    assert msg.get_payload().strip() == EMAIL.body


def test_smtp_refused_address_is_permanent(smtp):
    controller, handler = smtp
    with pytest.raises(PermanentFailure):
        SmtpProvider(smtp_settings(controller)).send(reference="r", to="nobody@example.org", message=EMAIL)
    assert handler.messages == []


def test_smtp_server_down_is_temporary():
    port = free_port()
    with pytest.raises(TemporaryFailure):
        SmtpProvider(Settings(smtp_host="127.0.0.1", smtp_port=port)).send(reference="r", to="a@example.org", message=EMAIL)
