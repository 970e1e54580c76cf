"""Event handlers: each applies one event inside the inbox transaction.

The inbox makes a redelivered event a no-op; the handlers are also idempotent for the
same change arriving twice as different events, or out of order (a stale meeting event
changes nothing; an ending that arrives before the referral leaves a tombstone).
"""

from sqlalchemy.orm import Session

from services.notifications import service
from services.notifications.models import meeting_replica
from shared.events import ENDED_STATUSES, Event, ReferralConsentWithdrawn, ReferralCreated, ReferralStatusChanged
from shared.inbox import Handler
from shared.replica import MEETING_EVENTS, apply_meeting_event


def on_meeting_event(session: Session, event: Event) -> None:
    previous, current = apply_meeting_event(session, meeting_replica, event)
    if previous is not None and previous == current:
        return  # stale or repeated: nothing changed
    if event.type == "meeting.withdrawn" or not current.active:
        if previous is not None and not previous.active:
            return  # already withdrawn
        service.meeting_withdrawn(session, meeting=previous or current)
    else:
        service.meeting_changed(session, previous=previous, current=current)


def on_referral_created(session: Session, event: Event) -> None:
    referral: ReferralCreated = event.parsed()
    service.record_referral(session, referral=referral)


def on_referral_status_changed(session: Session, event: Event) -> None:
    change: ReferralStatusChanged = event.parsed()
    if change.to_status in ENDED_STATUSES:
        service.stop_referral(session, referral_id=change.referral_id, site_id=change.site_id,
                              fellowship=change.fellowship, reason=f"referral {change.to_status}", erase_contact=True)


def on_consent_withdrawn(session: Session, event: Event) -> None:
    withdrawn: ReferralConsentWithdrawn = event.parsed()
    service.stop_referral(session, referral_id=withdrawn.referral_id, site_id=withdrawn.site_id,
                          fellowship=withdrawn.fellowship, reason="consent withdrawn", erase_contact=True)


HANDLERS: dict[str, Handler] = {
    **{name: on_meeting_event for name in MEETING_EVENTS},
    "referral.created": on_referral_created,
    "referral.status_changed": on_referral_status_changed,
    "referral.consent_withdrawn": on_consent_withdrawn,
}
