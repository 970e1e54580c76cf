"""Event handlers: each applies one event inside the inbox transaction.

Handlers are correct under replay and reordering: the inbox drops a second delivery of the
same event, and the reminder view ranks statuses so a late ``sent`` never undoes ``delivered``.
"""

from sqlalchemy.orm import Session

from services.referrals import service
from services.referrals.models import meeting_replica
from shared.events import Event
from shared.inbox import Handler
from shared.replica import MEETING_EVENTS, apply_meeting_event

REMINDER_EVENTS = ("reminder.scheduled", "reminder.cancelled", "reminder.sent", "reminder.delivered", "reminder.failed")


def on_meeting_event(session: Session, event: Event) -> None:
    previous, current = apply_meeting_event(session, meeting_replica, event)
    service.note_meeting_change(session, previous=previous, current=current, at=event.occurred_at)


def on_contact_opted_out(session: Session, event: Event) -> None:
    service.apply_opt_out(session, event=event)


def on_reply_received(session: Session, event: Event) -> None:
    service.record_reply(session, event=event)


def on_contact_opted_in(session: Session, event: Event) -> None:
    service.apply_opt_in(session, event=event)


def on_reminder_event(session: Session, event: Event) -> None:
    service.record_reminder_fact(session, event=event)


HANDLERS: dict[str, Handler] = {
    **{name: on_meeting_event for name in MEETING_EVENTS},
    **{name: on_reminder_event for name in REMINDER_EVENTS},
    "contact.opted_out": on_contact_opted_out,
    "contact.opted_in": on_contact_opted_in,
    "reply.received": on_reply_received,
}
