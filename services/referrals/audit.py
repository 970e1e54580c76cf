"""The audit trail: who looked at a client's contact details or changed a referral, when, and what.

"What" is FAMA's words for the act ("contact viewed: mobile", "transition: accepted → in
progress"), never the contact details or a typed reason. A change is recorded in the
transaction that makes it; a view is committed before the page or response carrying the
contact leaves. Site leads read their own site's trail, admins every
site's; entries older than REFERRALS_AUDIT_RETENTION_DAYS are pruned by the scheduler.
"""

from __future__ import annotations

import datetime as dt
import uuid

import structlog
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from services.referrals.models import AuditEntry, Referral
from services.referrals.runtime import runtime
from shared.auth import Principal
from shared.events import utcnow

log = structlog.get_logger(__name__)

ACTION_NAMES = {
    "contact_viewed": "Contact details viewed",
    "created": "Referral made",
    "transition": "Stage changed",
    "consent_withdrawn": "Consent withdrawn",
    "contact_unreachable": "Contact marked unreachable",
    "contact_erased": "Contact details erased",
}


def record_change(session: Session, *, referral: Referral, by: str, action: str, from_stage: str | None = None,
                  at: dt.datetime | None = None) -> None:
    """A change to a referral, in the caller's transaction (service._history calls it for every change)."""
    detail = f"{from_stage} → {referral.business_status}" if from_stage and action == "transition" \
        else referral.business_status
    session.add(AuditEntry(at=at or utcnow(), actor=by, actor_role=None, site_id=referral.site_id,
                           referral_id=referral.id, action=action, detail=detail,
                           via="system" if by.startswith("system") else "staff"))


def record_contact_view(session: Session, *, principal: Principal, referral: Referral, reveal: bool, via: str,
                        commit: bool = True) -> None:
    """A view of the contact details in clear, committed at once (nothing if none, or they were shown masked).

    It commits ``session``: call it where nothing else is pending (after the change's commit or rollback),
    the request's own session so SQLite's single writer never waits for itself.
    """
    shown = [name for name, value in (("mobile", referral.mobile), ("email", referral.email)) if value]
    if not reveal or not shown:
        return
    session.add(AuditEntry(at=utcnow(), actor=principal.subject, actor_role=principal.role.value,
                           site_id=referral.site_id, referral_id=referral.id, action="contact_viewed",
                           detail=", ".join(shown), via=via))
    if commit:
        session.commit()


def day_start(day: dt.date | None, *, next_day: bool = False) -> dt.datetime | None:
    """The start (UTC) of a day given in a filter, or of the day after (for an inclusive end)."""
    if day is None:
        return None
    return dt.datetime.combine(day + dt.timedelta(days=1 if next_day else 0), dt.time(), tzinfo=dt.UTC)


def entries(session: Session, *, site_id: str | None = None, referral_id: uuid.UUID | None = None,
            actor: str | None = None, since: dt.datetime | None = None, until: dt.datetime | None = None,
            limit: int = 50, offset: int = 0) -> tuple[list[AuditEntry], int]:
    """The trail, newest first, with the number of entries matching."""
    query = select(AuditEntry)
    for column, value in ((AuditEntry.site_id, site_id), (AuditEntry.referral_id, referral_id),
                          (AuditEntry.actor, actor)):
        if value is not None:
            query = query.where(column == value)
    if since is not None:
        query = query.where(AuditEntry.at >= since)
    if until is not None:
        query = query.where(AuditEntry.at < until)
    total = session.scalar(select(func.count()).select_from(query.subquery()))
    rows = session.scalars(query.order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(limit).offset(offset)).all()
    return list(rows), total or 0


def prune(*, retention_days: int | None = None, now: dt.datetime | None = None) -> int:
    """The scheduler's job: delete entries older than the retention period."""
    days = runtime.settings.audit_retention_days if retention_days is None else retention_days
    cutoff = (now or utcnow()) - dt.timedelta(days=days)
    with runtime.transaction() as session:
        count = session.execute(delete(AuditEntry).where(AuditEntry.at < cutoff)).rowcount
    if count:
        log.info("audit.pruned", count=count)
    return count
