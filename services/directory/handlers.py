"""Event handlers: each applies one event inside the inbox transaction.

They keep the engagement counters. Each fact (a referral made, a referral reaching a
stage, a reminder sent...) is counted once per referral or reminder, in the ISO week the
event happened, so redelivered, replayed or out-of-order events never count twice.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from services.directory import engagement
from shared.events import (
    AttendanceReported,
    ContactOptedOut,
    Event,
    ReferralConsentWithdrawn,
    ReferralCreated,
    ReferralStatusChanged,
    ReminderFact,
)
from shared.inbox import Handler


def referral_created(session: Session, event: Event) -> None:
    payload: ReferralCreated = event.parsed()
    stages = engagement.stage_metrics(business_status=payload.business_status, to_status=payload.status,
                                      accompanied=None)
    engagement.count_facts(session, subject=str(payload.referral_id), metrics=["referrals_made", *stages],
                           site_id=payload.site_id, fellowship=payload.fellowship, occurred_at=event.occurred_at)


def referral_status_changed(session: Session, event: Event) -> None:
    payload: ReferralStatusChanged = event.parsed()
    metrics = engagement.stage_metrics(business_status=payload.business_status, to_status=payload.to_status,
                                       accompanied=payload.accompanied, client_reported=payload.client_reported)
    engagement.count_facts(session, subject=str(payload.referral_id), metrics=metrics, site_id=payload.site_id,
                           fellowship=payload.fellowship, occurred_at=event.occurred_at)


def referral_consent_withdrawn(session: Session, event: Event) -> None:
    payload: ReferralConsentWithdrawn = event.parsed()
    engagement.count_facts(session, subject=str(payload.referral_id), metrics=["consent_withdrawn"],
                           site_id=payload.site_id, fellowship=payload.fellowship, occurred_at=event.occurred_at)


def reminder_fact(metric: str) -> Handler:
    def handle(session: Session, event: Event) -> None:
        payload: ReminderFact = event.parsed()
        engagement.count_facts(session, subject=str(payload.reminder_id), metrics=[metric], site_id=payload.site_id,
                               fellowship=payload.fellowship, occurred_at=event.occurred_at)

    return handle


def attendance_reported(session: Session, event: Event) -> None:
    """The client's own YES to the follow-up (once per referral); a NO is not counted."""
    payload: AttendanceReported = event.parsed()
    if payload.attendance == "attended":
        engagement.count_facts(session, subject=str(payload.referral_id), metrics=["client_reported_attended"],
                               site_id=payload.site_id, fellowship=payload.fellowship, occurred_at=event.occurred_at)


def contact_opted_out(session: Session, event: Event) -> None:
    payload: ContactOptedOut = event.parsed()
    for referral in payload.referrals:
        engagement.count_facts(session, subject=str(referral.referral_id), metrics=["opted_out"],
                               site_id=referral.site_id, fellowship=referral.fellowship, occurred_at=event.occurred_at)


HANDLERS: dict[str, Handler] = {
    "referral.created": referral_created,
    "referral.status_changed": referral_status_changed,
    "referral.consent_withdrawn": referral_consent_withdrawn,
    "reminder.sent": reminder_fact("reminders_sent"),
    "reminder.delivered": reminder_fact("reminders_delivered"),
    "reminder.failed": reminder_fact("reminders_failed"),
    "contact.opted_out": contact_opted_out,
    "attendance.reported": attendance_reported,
}
