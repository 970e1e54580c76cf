from __future__ import annotations

import hmac
import uuid
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from services.notifications import metrics as notifications_metrics
from services.notifications import service
from services.notifications.models import CREATED, TOO_LATE, DevMessage, ReferralContact, Reminder
from services.notifications.runtime import runtime
from services.notifications.schemas import (
    CallbackResult,
    DeliveryCallbackIn,
    InboundSmsIn,
    OutboxMessageOut,
    ReminderOut,
)
from shared.auth import AdminOnly, SiteStaff, ensure_site
from shared.db import unit_of_work
from shared.masking import mask_contact
from shared.web import CallbackRateLimit, PublicRateLimit, make_app

SessionDep = Annotated[Session, Depends(runtime.get_session)]

app = make_app(service="notifications", settings=runtime.settings, engine=lambda: runtime.engine,
               title="FAMA notifications",
               description="Reminder plans and messages, opt-outs, GOV.UK Notify delivery and inbound callbacks.")


class ReminderTimingMetrics:
    """/metrics: reminders the send-time clock check ended or holds, counted from the database
    (the send workers are other processes, other containers)."""

    def describe(self):
        return []  # registering must not touch the database

    def collect(self):
        try:
            with runtime.sessions() as session:
                too_late = session.execute(select(Reminder.kind, func.count()).where(Reminder.status == TOO_LATE)
                                           .group_by(Reminder.kind)).all()
                held = session.execute(select(Reminder.kind, func.count()).where(
                    Reminder.status == CREATED, Reminder.reason.like("held:%")).group_by(Reminder.kind)).all()
        except SQLAlchemyError:
            return  # /readyz reports the database; the scrape still answers
        ended = CounterMetricFamily("fama_reminders_too_late", "Reminders not sent: too late (by kind)", labels=["kind"])
        waiting = GaugeMetricFamily("fama_reminders_held", "Reminders held now (quiet hours, meeting not over)",
                                    labels=["kind"])
        for family, rows in ((ended, too_late), (waiting, held)):
            for kind, count in rows:
                family.add_metric([kind], count)
            yield family


app.state.metrics_registry.register(ReminderTimingMetrics())
notifications_metrics.register(app.state.metrics_registry)


def notify_caller(authorization: Annotated[str | None, Header()] = None) -> None:
    """GOV.UK Notify sends the bearer token configured for the callback."""
    expected = f"Bearer {runtime.settings.callback_token}"
    if authorization is None or not hmac.compare_digest(authorization.encode(), expected.encode()):
        notifications_metrics.CALLBACKS.labels("any", "unauthorized").inc()
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="a valid callback bearer token is required",
                            headers={"WWW-Authenticate": "Bearer"})


NotifyCaller = Annotated[None, Depends(notify_caller)]


@app.post("/callbacks/delivery", response_model=CallbackResult, tags=["callbacks"],
          summary="GOV.UK Notify delivery receipt", dependencies=[CallbackRateLimit])
def delivery_callback(receipt: DeliveryCallbackIn, session: SessionDep, _caller: NotifyCaller):
    with unit_of_work(session):
        outcome = service.delivery_status(session, receipt=receipt)
    notifications_metrics.CALLBACKS.labels("delivery", outcome).inc()
    return CallbackResult(outcome=outcome)


@app.post("/callbacks/inbound-sms", response_model=CallbackResult, tags=["callbacks"],
          summary="GOV.UK Notify received text message", dependencies=[CallbackRateLimit])
def inbound_sms_callback(inbound: InboundSmsIn, session: SessionDep, _caller: NotifyCaller):
    try:
        with unit_of_work(session):
            outcome = service.inbound_sms(session, inbound=inbound)
    except service.NotAText:
        notifications_metrics.CALLBACKS.labels("inbound_sms", "invalid").inc()
        raise
    notifications_metrics.CALLBACKS.labels("inbound_sms", outcome).inc()
    return CallbackResult(outcome=outcome)


# The client's pages: alone, without the staff pages' look (no sign-in, no navigation to staff pages).
pages = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
UNSUBSCRIBE_RESPONSES = {404: {"description": "Not a link FAMA made (a page saying so)", "content": {"text/html": {}}}}
UNSUBSCRIBE_TITLES = {"bad_link": "This link is not valid", "confirm": "Stop these emails?",
                      "done": "You have unsubscribed"}


def unsubscribe_step(request: Request, step: str, token: str = "") -> HTMLResponse:
    return pages.TemplateResponse(request, "unsubscribe.html", {"step": step, "title": UNSUBSCRIBE_TITLES[step],
                                                                "token": token},
                                  status_code=404 if step == "bad_link" else 200)


@app.get("/unsubscribe/{token}", response_class=HTMLResponse, tags=["unsubscribe"], dependencies=[PublicRateLimit],
         responses=UNSUBSCRIBE_RESPONSES,
         summary="The page an email's unsubscribe link opens (no sign-in: the signed token is the key)")
def unsubscribe_page(token: str, request: Request):
    if service.unsubscribe_hash(token) is None:
        return unsubscribe_step(request, "bad_link")
    # A GET changes nothing (mail scanners open links): the button POSTs.
    return unsubscribe_step(request, "confirm", token)


@app.post("/unsubscribe/{token}", response_class=HTMLResponse, tags=["unsubscribe"], dependencies=[PublicRateLimit],
          responses=UNSUBSCRIBE_RESPONSES,
          summary="One-click unsubscribe (RFC 8058 List-Unsubscribe-Post), also the page's button")
def unsubscribe(token: str, request: Request, session: SessionDep):
    hash_ = service.unsubscribe_hash(token)
    if hash_ is None:
        return unsubscribe_step(request, "bad_link")
    with unit_of_work(session):
        service.opt_out(session, hash_=hash_, channel="email")
    return unsubscribe_step(request, "done")


@app.get("/outbox", response_model=list[OutboxMessageOut], tags=["dev"],
         summary="What the dev provider 'sent', newest first (admin)")
def dev_outbox(session: SessionDep, _admin: AdminOnly, limit: int = Query(50, ge=1, le=1000)):
    messages = session.scalars(select(DevMessage).order_by(DevMessage.id.desc()).limit(limit))
    # Admins see what was sent, never to whom in full (contacts are shown only to the owning site).
    return [OutboxMessageOut.model_validate(m).model_copy(update={"recipient": m.recipient and mask_contact(m.recipient)})
            for m in messages]


@app.get("/referrals/{referral_id}/reminders", response_model=list[ReminderOut], tags=["reminders"],
         summary="A referral's reminders and what happened to each")
def referral_reminders(referral_id: uuid.UUID, session: SessionDep, principal: SiteStaff):
    contact = session.get(ReferralContact, referral_id)
    if contact is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no reminders known for referral {referral_id}")
    ensure_site(principal, contact.site_id)
    return list(session.scalars(select(Reminder).where(Reminder.referral_id == referral_id).order_by(Reminder.due_at)))
