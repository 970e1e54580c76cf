"""Notifications' own figures for /metrics: reminders due and not sent, outcomes and failure
reasons, opt-outs (all read from the database at scrape time, as the send workers and the
dispatcher are other processes), and the provider callbacks this API answered."""

from __future__ import annotations

import re

from prometheus_client import Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from services.notifications.models import (
    CANCELLED,
    CREATED,
    DELIVERED,
    FAILURES,
    QUEUED,
    SENDING,
    SENT,
    TOO_LATE,
    OptOut,
    Reminder,
)
from services.notifications.runtime import runtime
from shared import queues
from shared.events import utcnow
from shared.metrics import Cached, age_seconds, backbone_metrics, capped_counts

# Counted in this API process (callbacks are answered here); each replica its own share, summed by Prometheus.
# HTTP-level refusals of callbacks (401, 413, 422, 429) are in http_requests_total{route="/callbacks/..."}.
CALLBACKS = Counter("fama_callbacks", "Provider callbacks answered, by what they changed", ["callback", "outcome"],
                    registry=None)

NOT_SENT_YET = (CREATED, QUEUED, SENDING)
STATUSES = (*NOT_SENT_YET, SENT, DELIVERED, *FAILURES, CANCELLED, TOO_LATE)


def failure_reason(reason: str | None) -> str:
    """A bounded label for a failure's reason: its fixed part, never the provider's free text
    (which could be long, varied, or quote what was sent)."""
    if not reason:
        return "none"
    if reason.startswith("provider: "):  # a delivery receipt: "provider: permanent-failure"
        return reason[:40]
    head = re.split(r":| \(", reason, maxsplit=1)[0].strip()
    return head[:40] or "other"


def _compute() -> list[Metric]:
    now = utcnow()
    by_status = GaugeMetricFamily("fama_reminders", "Reminders by status now", labels=["status"])
    overdue = GaugeMetricFamily("fama_reminders_overdue", "Reminders due and not sent yet, by status "
                                "(created: not dispatched; queued/sending: not sent; capped at 100000)", labels=["status"])
    oldest = GaugeMetricFamily("fama_reminders_overdue_oldest_age_seconds",
                               "How long the oldest reminder due and not sent has been due (0 when none)")
    failures = CounterMetricFamily("fama_reminder_failures", "Reminders that failed, by failure status and reason",
                                   labels=["status", "reason"])
    opt_outs = CounterMetricFamily("fama_opt_outs", "Numbers and addresses opted out (STOP)", labels=["channel"])
    r = Reminder.__table__.c
    try:
        with runtime.sessions() as session:
            # Each of these reads the (status, due_at) index.
            counts = dict.fromkeys(STATUSES, 0)
            counts.update(session.execute(select(r.status, func.count()).group_by(r.status)).all())
            for status, n in counts.items():
                by_status.add_metric([status], n)
            for status, n in capped_counts(session, r.status, r.status.in_(NOT_SENT_YET), r.due_at <= now,
                                           every=NOT_SENT_YET).items():
                overdue.add_metric([status], n)
            first = session.scalar(select(func.min(r.due_at)).where(r.status.in_(NOT_SENT_YET), r.due_at <= now))
            oldest.add_metric([], age_seconds(now, first))
            reasons: dict[tuple[str, str], int] = {}
            for status, reason, n in session.execute(select(r.status, r.reason, func.count())
                                                     .where(r.status.in_(FAILURES)).group_by(r.status, r.reason)):
                key = (status, failure_reason(reason))
                reasons[key] = reasons.get(key, 0) + n
            for (status, reason), n in sorted(reasons.items()):
                failures.add_metric([status, reason], n)
            for channel, n in session.execute(select(OptOut.channel, func.count()).group_by(OptOut.channel)):
                opt_outs.add_metric([channel], n)
    except SQLAlchemyError:
        return []  # fama_metrics_source_up{source="database"} says so
    return [by_status, overdue, oldest, failures, opt_outs]


def register(registry) -> None:
    """Everything notifications' /metrics shows beyond HTTP requests."""
    registry.register(backbone_metrics(runtime, queues=[queues.NOTIFICATIONS_EVENTS, queues.NOTIFICATIONS_SEND]))
    registry.register(Cached(_compute))
    registry.register(CALLBACKS)
