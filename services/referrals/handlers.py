"""Event handlers: each applies one event inside the inbox transaction."""

from sqlalchemy.orm import Session

from services.referrals.models import meeting_replica
from shared.events import Event
from shared.inbox import Handler
from shared.replica import MEETING_EVENTS, apply_meeting_event


def on_meeting_event(session: Session, event: Event) -> None:
    apply_meeting_event(session, meeting_replica, event)


HANDLERS: dict[str, Handler] = {name: on_meeting_event for name in MEETING_EVENTS}
