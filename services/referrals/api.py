"""The keyworker referral desk API. Keyworkers and site leads act for their own site only,
admins for all; commissioners see no individual referral (they read aggregates elsewhere)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, HTTPException, Query, status
from sqlalchemy.orm import Session

from services.referrals import audit, audit_page, service
from services.referrals.models import Referral
from services.referrals.pages import setup_desk, templates
from services.referrals.runtime import runtime
from services.referrals.schemas import (
    AuditEntryOut,
    AuditPage,
    ConsentWordingList,
    ConsentWordingOut,
    ReferralDetailOut,
    ReferralIn,
    ReferralPage,
    Status,
    TransitionIn,
)
from shared import queues
from shared.auth import CurrentPrincipal, Principal, Role, SiteStaff, ensure_site, require_roles
from shared.db import unit_of_work
from shared.events import Stage
from shared.metrics import backbone_metrics
from shared.pages import setup_pages
from shared.types import InputDate
from shared.web import make_app

SessionDep = Annotated[Session, Depends(runtime.get_session)]

app = make_app(service="referrals", settings=runtime.settings, engine=lambda: runtime.engine,
               title="FAMA referrals", description="The keyworker referral desk: referrals, their lifecycle and consent.")
# /metrics: the outbox, the events queue, refused events and inbox lag (shared/metrics.py).
app.state.metrics_registry.register(backbone_metrics(runtime, queues=[queues.events_queue("referrals")]))


def shown(session: Session, principal: Principal, referral: Referral) -> ReferralDetailOut:
    """The referral as this principal may see it; a view of its contact details in clear goes in the audit trail."""
    reveal = service.reveals_contact(principal, referral.site_id)
    out = service.referral_out(referral, reveal=reveal, detail=True, session=session)
    audit.record_contact_view(session, principal=principal, referral=referral, reveal=reveal, via="api")
    return out


def load_for(session: Session, principal: Principal, referral_id: uuid.UUID, *, lock: bool = False):
    referral = service.lock_referral(session, referral_id) if lock else session.get(Referral, referral_id)
    if referral is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no referral {referral_id}")
    ensure_site(principal, referral.site_id)
    return referral


@app.post("/referrals", response_model=ReferralDetailOut, status_code=status.HTTP_201_CREATED, tags=["referrals"])
def create_referral(referral_in: ReferralIn, session: SessionDep, principal: SiteStaff):
    if principal.role == Role.admin:
        if not referral_in.site_id:
            raise service.ReferralError("site_id", "admins must say which site the referral is for")
        site_id = referral_in.site_id
    else:
        site_id = principal.site
        ensure_site(principal, referral_in.site_id or site_id)
    with unit_of_work(session):
        referral = service.create_referral(session, referral_in=referral_in, site_id=site_id, by=principal.subject)
        # The answer is read before the commit, on the connection already held (after it, it would cost
        # another connection and more round trips), and the view goes in the audit trail in the same commit.
        reveal = service.reveals_contact(principal, site_id)
        created = service.referral_out(referral, reveal=reveal, detail=True, session=session, created=True)
        audit.record_contact_view(session, principal=principal, referral=referral, reveal=reveal, via="api",
                                  commit=False)
    return created


@app.get("/referrals", response_model=ReferralPage, tags=["referrals"])
def list_referrals(
    session: SessionDep, principal: SiteStaff,
    site: Annotated[str | None, Query(max_length=64, description="Admins: one site's referrals")] = None,
    status_: Annotated[Status | None, Query(alias="status")] = None,
    stage: Stage | None = None,
    meeting: Annotated[str | None, Query(max_length=200)] = None,
    planned_from: InputDate | None = None, planned_to: InputDate | None = None,
    created_from: InputDate | None = None, created_to: InputDate | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50, offset: Annotated[int, Query(ge=0)] = 0,
):
    if principal.role != Role.admin:
        ensure_site(principal, site or principal.site)
        site = principal.site
    items, total = service.list_referrals(session, site_id=site, status=status_, stage=stage, meeting_slug=meeting,
                                          planned_from=planned_from, planned_to=planned_to,
                                          created_from=created_from, created_to=created_to, limit=limit, offset=offset)
    page = ReferralPage(items=[service.referral_out(r, reveal=service.reveals_contact(principal, r.site_id)) for r in items],
                        total=total, limit=limit, offset=offset)
    with unit_of_work(session):
        for referral in items:
            audit.record_contact_view(session, principal=principal, referral=referral, via="api", commit=False,
                                      reveal=service.reveals_contact(principal, referral.site_id))
    return page


@app.get("/referrals/{referral_id}", response_model=ReferralDetailOut, tags=["referrals"])
def get_referral(referral_id: uuid.UUID, session: SessionDep, principal: SiteStaff):
    referral = load_for(session, principal, referral_id)
    return shown(session, principal, referral)


@app.post("/referrals/{referral_id}/transitions", response_model=ReferralDetailOut, tags=["referrals"],
          responses={409: {"description": "Not allowed from the current stage; lists the allowed ones"}})
def transition_referral(referral_id: uuid.UUID, transition_in: TransitionIn, session: SessionDep, principal: SiteStaff):
    referral = load_for(session, principal, referral_id, lock=True)
    with unit_of_work(session):
        service.transition_referral(session, referral=referral, transition_in=transition_in, by=principal.subject)
    return shown(session, principal, referral)


@app.post("/referrals/{referral_id}/consent-withdrawal", response_model=ReferralDetailOut, tags=["consent"])
def withdraw_consent(referral_id: uuid.UUID, session: SessionDep, principal: SiteStaff):
    """Stop reminders and erase the contact details; the referral itself goes on. Repeating it changes nothing."""
    referral = load_for(session, principal, referral_id, lock=True)
    with unit_of_work(session):
        service.withdraw_consent(session, referral=referral, by=principal.subject)
    return shown(session, principal, referral)


@app.get("/consent-wording", response_model=ConsentWordingList, tags=["consent"])
def consent_wording(_principal: CurrentPrincipal):
    """The consent wording, verbatim, by version: read the current one to the client."""
    return ConsentWordingList(current=service.CURRENT_CONSENT_WORDING, versions=[
        ConsentWordingOut(version=v, text=t, current=v == service.CURRENT_CONSENT_WORDING)
        for v, t in service.CONSENT_WORDING.items()])


@app.get("/audit", response_model=AuditPage, tags=["audit"])
def audit_trail(
    session: SessionDep, principal: Annotated[Principal, Depends(require_roles(Role.site_lead, Role.admin))],
    site: Annotated[str | None, Query(max_length=64, description="Admins: one site's trail")] = None,
    referral: uuid.UUID | None = None,
    actor: Annotated[str | None, Query(max_length=200, description="One staff member's subject")] = None,
    since: InputDate | None = None, until: InputDate | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50, offset: Annotated[int, Query(ge=0)] = 0,
):
    """Who viewed a client's contact details or changed a referral, when and what, newest first.
    Site leads read their own site's trail; admins every site's. ``until`` is inclusive."""
    if principal.role != Role.admin:
        ensure_site(principal, site or principal.site)
        site = principal.site
    rows, total = audit.entries(session, site_id=site, referral_id=referral, actor=actor,
                                since=audit.day_start(since), until=audit.day_start(until, next_day=True),
                                limit=limit, offset=offset)
    return AuditPage(items=[AuditEntryOut.model_validate(r) for r in rows], total=total, limit=limit, offset=offset)


# The keyworker's referral desk pages (/desk), sign-in and the shared stylesheet.
setup_pages(app, templates)
app.include_router(audit_page.router)
setup_desk(app)
