"""Feed sources: Meeting Guide feeds the directory keeps fresh, and their import runs.

A source with a URL and ``every_hours`` is re-imported by the directory scheduler when due
(``run_due``); an admin can import any source now, or upload a file for it. Each import is a
run with its report. A run that would withdraw more than DIRECTORY_FEED_HOLD_SHARE of the
source's live meetings (a feed that suddenly lost most of them: a broken export, a wrong URL)
is held: nothing is applied, and the scheduler leaves the source alone, until an admin
confirms it (then it is applied as it was) or discards it.
"""

from __future__ import annotations

import datetime as dt

import structlog
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.directory import feeds
from services.directory.config import get_settings
from services.directory.models import FeedSource, ImportRun, Meeting
from services.directory.runtime import runtime
from shared.events import utcnow

log = structlog.get_logger(__name__)


class NothingToDecide(ValueError):
    """The run is not held (already decided, or never held)."""


class _Held(Exception):
    def __init__(self, report):
        self.report = report


def live_meetings(session: Session, source_id: str) -> int:
    return session.scalar(select(func.count()).select_from(Meeting)
                          .where(Meeting.source == source_id, Meeting.active.is_(True))) or 0


def should_hold(*, live_before: int, withdrawn: int) -> bool:
    settings = get_settings()
    return live_before >= settings.feed_hold_min_meetings and withdrawn > settings.feed_hold_share * live_before


def import_rows(source: FeedSource, rows: list, *, trigger: str, by: str) -> ImportRun:
    """Apply ``rows`` to the source's meetings, or hold them if most meetings would go; record the run."""
    with runtime.transaction() as session:
        live = live_meetings(session, source.id)
        status, held_rows = "applied", None
        try:
            with session.begin_nested():
                report = feeds.import_feed(session, rows=rows, source=source.id, fellowship=source.fellowship,
                                           timezone=source.timezone)
                if should_hold(live_before=live, withdrawn=report.withdrawn):
                    raise _Held(report)
        except _Held as held:
            report, status, held_rows = held.report, "held", rows
            log.warning("feed.held", source=source.id, live=live, would_withdraw=report.withdrawn)
        run = ImportRun(source_id=source.id, started_at=utcnow(), trigger=trigger, by=by, status=status,
                        report=report.model_dump(mode="json"), live_before=live, held_rows=held_rows)
        session.add(run)
    return run


def import_from_url(source: FeedSource, *, trigger: str, by: str) -> ImportRun:
    """Fetch the source's URL and import it; a fetch that fails is a failed run and changes nothing."""
    try:
        rows = feeds.fetch_feed(source.url)
    except feeds.FeedError as exc:
        with runtime.transaction() as session:
            run = ImportRun(source_id=source.id, started_at=utcnow(), trigger=trigger, by=by, status="failed",
                            error=str(exc), live_before=live_meetings(session, source.id))
            session.add(run)
        log.warning("feed.fetch_failed", source=source.id, error=str(exc))
        return run
    return import_rows(source, rows, trigger=trigger, by=by)


def awaiting_decision(session: Session, source_id: str) -> ImportRun | None:
    return session.scalar(select(ImportRun).where(ImportRun.source_id == source_id, ImportRun.status == "held")
                          .order_by(ImportRun.id.desc()).limit(1))


def decide(run_id: int, *, confirm: bool, by: str) -> ImportRun:
    """An admin's decision on a held run: apply it as it was, or discard it. Its rows are then dropped."""
    with runtime.transaction() as session:
        run = session.scalar(select(ImportRun).where(ImportRun.id == run_id).with_for_update())
        if run is None or run.status != "held":
            raise NothingToDecide(f"import run {run_id} is not waiting for a decision")
        source = session.get(FeedSource, run.source_id)
        if confirm:
            report = feeds.import_feed(session, rows=run.held_rows or [], source=run.source_id,
                                       fellowship=source.fellowship, timezone=source.timezone)
            run.report = report.model_dump(mode="json")
        run.status = "confirmed" if confirm else "discarded"
        run.held_rows = None
        run.decided_by, run.decided_at = by, utcnow()
    log.info("feed.decided", source=run.source_id, run=run_id, confirmed=confirm)
    return run


def run_due(now: dt.datetime | None = None) -> dict | None:
    """The scheduler's job: import every source whose time has come (sources held for a decision wait)."""
    now = now or utcnow()
    with runtime.transaction() as session:
        due = session.scalars(select(FeedSource).where(
            FeedSource.active.is_(True), FeedSource.url.is_not(None), FeedSource.every_hours.is_not(None),
            FeedSource.next_run_at <= now).with_for_update(skip_locked=True)).all()
        claimed = []
        for source in due:
            source.next_run_at = now + dt.timedelta(hours=source.every_hours)
            if awaiting_decision(session, source.id) is None:
                claimed.append(source)
            else:
                log.info("feed.waiting_for_decision", source=source.id)
    results = {source.id: import_from_url(source, trigger="schedule", by="system:schedule").status
               for source in claimed}
    return results or None
