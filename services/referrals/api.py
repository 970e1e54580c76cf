"""The keyworker referral desk API. Keyworkers and site leads act for their own site only,
admins for all; commissioners see no individual referral (they read aggregates elsewhere)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Depends, HTTPException, Query, status
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from services.referrals import service
from services.referrals.models import Referral
from services.referrals.pages import setup_desk, templates
from services.referrals.runtime import runtime
from services.referrals.schemas import (
    ConsentWordingList,
    ConsentWordingOut,
    ReferralDetailOut,
    ReferralIn,
    ReferralPage,
    Status,
    TransitionIn,
)
from shared import queues
from shared.auth import CurrentPrincipal, Principal, Role, SiteStaff, ensure_site
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


def unprocessable(exc: service.ReferralError) -> JSONResponse:
    return JSONResponse({"detail": f"{exc.field}: {exc.message}",
                         "errors": [{"field": exc.field, "message": exc.message, "type": "value_error"}]},
                        status_code=422)


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
            return unprocessable(service.ReferralError("site_id", "admins must say which site the referral is for"))
        site_id = referral_in.site_id
    else:
        site_id = principal.site
        ensure_site(principal, referral_in.site_id or site_id)
    try:
        referral = service.create_referral(session, referral_in=referral_in, site_id=site_id, by=principal.subject)
    except service.ReferralError as exc:
        session.rollback()
        return unprocessable(exc)
    # Read back before the commit, on the connection already held: after it, the answer would cost
    # another connection and three more round trips for what this transaction has just written.
    created = service.referral_out(referral, reveal=service.reveals_contact(principal, site_id), detail=True,
                                   session=session)
    session.commit()
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
    return ReferralPage(items=[service.referral_out(r, reveal=service.reveals_contact(principal, r.site_id)) for r in items],
                        total=total, limit=limit, offset=offset)


@app.get("/referrals/{referral_id}", response_model=ReferralDetailOut, tags=["referrals"])
def get_referral(referral_id: uuid.UUID, session: SessionDep, principal: SiteStaff):
    referral = load_for(session, principal, referral_id)
    return service.referral_out(referral, reveal=service.reveals_contact(principal, referral.site_id), detail=True,
                                session=session)


@app.post("/referrals/{referral_id}/transitions", response_model=ReferralDetailOut, tags=["referrals"],
          responses={409: {"description": "Not allowed from the current stage; lists the allowed ones"}})
def transition_referral(referral_id: uuid.UUID, transition_in: TransitionIn, session: SessionDep, principal: SiteStaff):
    referral = load_for(session, principal, referral_id, lock=True)
    try:
        service.transition_referral(session, referral=referral, transition_in=transition_in, by=principal.subject)
    except service.IllegalTransition as exc:
        session.rollback()
        return JSONResponse({"detail": str(exc), "allowed": exc.allowed}, status_code=status.HTTP_409_CONFLICT)
    except service.ReferralError as exc:
        session.rollback()
        return unprocessable(exc)
    session.commit()
    return service.referral_out(referral, reveal=service.reveals_contact(principal, referral.site_id), detail=True,
                                session=session)


@app.post("/referrals/{referral_id}/consent-withdrawal", response_model=ReferralDetailOut, tags=["consent"])
def withdraw_consent(referral_id: uuid.UUID, session: SessionDep, principal: SiteStaff):
    """Stop reminders and erase the contact details; the referral itself goes on. Repeating it changes nothing."""
    referral = load_for(session, principal, referral_id, lock=True)
    try:
        service.withdraw_consent(session, referral=referral, by=principal.subject)
    except service.ConsentNotGiven as exc:
        session.rollback()
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from exc
    session.commit()
    return service.referral_out(referral, reveal=service.reveals_contact(principal, referral.site_id), detail=True,
                                session=session)


@app.get("/consent-wording", response_model=ConsentWordingList, tags=["consent"])
def consent_wording(_principal: CurrentPrincipal):
    """The consent wording, verbatim, by version: read the current one to the client."""
    return ConsentWordingList(current=service.CURRENT_CONSENT_WORDING, versions=[
        ConsentWordingOut(version=v, text=t, current=v == service.CURRENT_CONSENT_WORDING)
        for v, t in service.CONSENT_WORDING.items()])


# The keyworker's referral desk pages (/desk), sign-in and the shared stylesheet.
setup_pages(app, templates)
setup_desk(app)
