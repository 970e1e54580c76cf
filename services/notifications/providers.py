"""Where messages go: GOV.UK Notify, SMTP email, or the dev provider that records them.

Every provider takes our reference (the reminder id), answers a ``Handover`` and raises
``TemporaryFailure`` (worth retrying) or ``PermanentFailure``. ``lookup`` answers "did you
already take the message with this reference?" so a send interrupted by a crash is not
repeated; a provider that cannot know answers ``UNKNOWN``.
"""

from __future__ import annotations

import smtplib
import time
from email.message import EmailMessage
from email.utils import make_msgid
from typing import NamedTuple, Protocol

import requests
from notifications_python_client import NotificationsAPIClient
from notifications_python_client.errors import APIError
from sqlalchemy import Table, select
from sqlalchemy.orm import Session, sessionmaker

from services.notifications.config import Settings
from services.notifications.models import DevMessage
from services.notifications.wording import Message
from shared.events import utcnow

UNKNOWN = object()


class Record(NamedTuple):
    """A message that is a row in our own database: it exists once the row is written."""

    table: Table
    row: dict


class Handover(NamedTuple):
    """What a provider did with a message: its reference for it and, when the message is a row
    in our own database (the dev provider), that row still to be written. The send path writes
    it with the reminder's sent mark, in one statement: the message then exists if and only if
    the reminder says "sent"."""

    provider_ref: str
    record: Record | None = None  # None: the message has left


class Provider(Protocol):
    """What the send path needs of a provider: send and look up."""

    def send(self, *, reference: str, to: str, message: Message) -> Handover:
        """Hand the message over; our reference in, the provider's reference out (or a Failure)."""

    def lookup(self, reference: str):
        """The provider's reference of a message it already took, None if it took none, or UNKNOWN."""


class TemporaryFailure(Exception):
    """The provider could not take the message now (rate limited, down, timed out)."""


class PermanentFailure(Exception):
    """The provider refused the message; sending it again would not help."""


class DevProvider:
    """Records each message in the database: GET /outbox shows what a client would receive.

    Its message is a row in our own database, handed back to be written with the sent mark.
    Its reference for a message is "dev-" + our reference, known before the row is written.
    """

    def __init__(self, sessions: sessionmaker[Session], delay_seconds: float = 0.0):
        self.sessions = sessions
        self.delay_seconds = delay_seconds

    def send(self, *, reference: str, to: str, message: Message) -> Handover:
        if self.delay_seconds:
            time.sleep(self.delay_seconds)  # lets tests kill a worker in the middle of a send
        row = {"reference": reference, "channel": message.channel, "recipient": to, "subject": message.subject,
               "body": message.body, "created_at": utcnow()}
        return Handover(self.provider_ref(reference), Record(DevMessage.__table__, row))

    @staticmethod
    def provider_ref(reference: str) -> str:
        return f"dev-{reference}"

    def lookup(self, reference: str):
        with self.sessions() as session:
            found = session.scalar(select(DevMessage.id).where(DevMessage.reference == reference).limit(1))
        return None if found is None else self.provider_ref(reference)


class NotifyProvider:
    """GOV.UK Notify through notifications-python-client, with one generic template per
    channel whose ((body)) (and ((subject))) we fill, so our wording stays in our files."""

    def __init__(self, cfg: Settings):
        if not cfg.notify_api_key:
            raise PermanentFailure("NOTIFICATIONS_NOTIFY_API_KEY is not set")
        self.cfg = cfg
        self.client = NotificationsAPIClient(cfg.notify_api_key, base_url=cfg.notify_base_url,
                                             timeout=cfg.notify_timeout_seconds)

    def send(self, *, reference: str, to: str, message: Message) -> str:
        try:
            if message.channel == "sms":
                response = self.client.send_sms_notification(
                    phone_number=to, template_id=self.cfg.notify_sms_template_id,
                    personalisation={"body": message.body}, reference=reference,
                    sms_sender_id=self.cfg.notify_sms_sender_id)
            else:
                response = self.client.send_email_notification(
                    email_address=to, template_id=self.cfg.notify_email_template_id,
                    personalisation={"subject": message.subject or "", "body": message.body}, reference=reference,
                    one_click_unsubscribe_url=message.unsubscribe_url)
        except APIError as exc:
            # Notify: 400 bad request / 403 auth are permanent; 429 and 5xx are worth a retry.
            if getattr(exc, "response", None) is None:
                raise TemporaryFailure("GOV.UK Notify unreachable") from exc
            if exc.status_code == 429 or exc.status_code >= 500:
                raise TemporaryFailure(f"GOV.UK Notify {exc.status_code}") from exc
            raise PermanentFailure(f"GOV.UK Notify {exc.status_code}: {str(exc.message)[:120]}") from exc
        except requests.RequestException as exc:
            raise TemporaryFailure(f"GOV.UK Notify unreachable: {type(exc).__name__}") from exc
        return Handover(str(response["id"]))

    def lookup(self, reference: str):
        try:
            found = self.client.get_all_notifications(reference=reference).get("notifications", [])
        except (APIError, requests.RequestException):
            return UNKNOWN
        return str(found[0]["id"]) if found else None


class SmtpProvider:
    def __init__(self, cfg: Settings):
        self.cfg = cfg

    def send(self, *, reference: str, to: str, message: Message) -> str:
        if message.channel != "email":
            raise PermanentFailure("the SMTP provider sends email only")
        email = EmailMessage()
        email["From"], email["To"], email["Subject"] = self.cfg.smtp_from, to, message.subject or "Reminder"
        email["Message-ID"] = make_msgid(idstring=reference)
        email["X-FAMA-Reference"] = reference
        if message.unsubscribe_url:  # RFC 8058: mail clients offer "Unsubscribe" and POST to the link
            email["List-Unsubscribe"] = f"<{message.unsubscribe_url}>"
            email["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
        email.set_content(message.body)
        try:
            with smtplib.SMTP(self.cfg.smtp_host, self.cfg.smtp_port, timeout=self.cfg.smtp_timeout_seconds) as smtp:
                if self.cfg.smtp_starttls:
                    smtp.starttls()
                if self.cfg.smtp_username:
                    smtp.login(self.cfg.smtp_username, self.cfg.smtp_password or "")
                smtp.send_message(email)
        except smtplib.SMTPRecipientsRefused as exc:
            raise PermanentFailure("the SMTP server refused the address") from exc
        except smtplib.SMTPResponseException as exc:
            if 400 <= exc.smtp_code < 500:
                raise TemporaryFailure(f"SMTP {exc.smtp_code}") from exc
            raise PermanentFailure(f"SMTP {exc.smtp_code}") from exc
        except (TimeoutError, smtplib.SMTPException, OSError) as exc:
            raise TemporaryFailure(f"SMTP unavailable: {type(exc).__name__}") from exc
        return Handover(email["Message-ID"])

    def lookup(self, reference: str):
        return UNKNOWN  # SMTP cannot say whether an interrupted message was taken


_providers: dict[tuple[str, int, int], tuple[Provider, Settings]] = {}


def provider_for(channel: str, cfg: Settings, sessions: sessionmaker[Session]) -> Provider:
    """The one place a channel's provider is chosen, built once per process (a Notify client keeps its connections)."""
    key = (channel, id(cfg), id(sessions))
    hit = _providers.get(key)
    if hit is None:
        hit = _providers[key] = (_build(channel, cfg, sessions), cfg)  # cfg kept so its id stays unique
    return hit[0]


def _build(channel: str, cfg: Settings, sessions: sessionmaker[Session]) -> Provider:
    name = cfg.sms_provider if channel == "sms" else cfg.email_provider
    if name == "notify":
        return NotifyProvider(cfg)
    if name == "smtp":
        return SmtpProvider(cfg)
    return DevProvider(sessions, cfg.dev_send_delay_seconds)
