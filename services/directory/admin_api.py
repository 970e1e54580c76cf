"""Admins' API for feed sources and their import runs (the pages are in admin.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Request, status
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from services.directory import feed_sources, feeds, service
from services.directory.models import FeedSource, ImportRun
from services.directory.runtime import runtime
from services.directory.schemas import FeedSourceIn, FeedSourceOut, ImportRunOut, MeetingIn
from shared.auth import AdminOnly
from shared.db import unit_of_work
from shared.events import utcnow

router = APIRouter(tags=["feed sources"])
SessionDep = Annotated[Session, Depends(runtime.get_session)]
RunId = Annotated[int, Path(ge=1, le=2_147_483_647, description="The import run's number")]


def add_source(session: Session, *, source_in: FeedSourceIn, by: str) -> FeedSource:
    """A new feed source (checked: timezone, a schedule only with a URL, a free name)."""
    try:
        MeetingIn.iana_timezone(source_in.timezone)
    except ValueError as exc:
        raise service.InvalidInput("timezone", str(exc)) from exc
    if source_in.every_hours is not None and source_in.url is None:
        raise service.InvalidInput("every_hours", "only a feed with a url can be re-imported on a schedule")
    if session.get(FeedSource, source_in.id) is not None:
        raise service.MeetingExists(f"there is already a feed source {source_in.id!r}")
    first_run = utcnow() if source_in.every_hours else None
    source = FeedSource(**source_in.model_dump(), next_run_at=first_run, active=True, created_by=by)
    session.add(source)
    return source


def load_source(session: Session, source_id: str) -> FeedSource:
    source = session.get(FeedSource, source_id)
    if source is None:
        raise service.NotFound(f"no feed source {source_id!r}")
    return source


@router.post("/feed-sources", response_model=FeedSourceOut, status_code=status.HTTP_201_CREATED)
def create_source(source_in: FeedSourceIn, session: SessionDep, admin: AdminOnly):
    with unit_of_work(session):
        source = add_source(session, source_in=source_in, by=admin.subject)
    return source


@router.get("/feed-sources", response_model=list[FeedSourceOut])
def list_sources(session: SessionDep, _admin: AdminOnly):
    return session.scalars(select(FeedSource).order_by(FeedSource.id)).all()


@router.get("/feed-sources/{source_id}/runs", response_model=list[ImportRunOut])
def list_runs(source_id: str, session: SessionDep, _admin: AdminOnly):
    load_source(session, source_id)
    return session.scalars(select(ImportRun).where(ImportRun.source_id == source_id)
                           .order_by(ImportRun.id.desc()).limit(50)).all()


@router.post("/feed-sources/{source_id}/import", response_model=ImportRunOut,
             summary="Import now: the source's URL, or the feed (a JSON list) in the body")
async def import_now(source_id: str, request: Request, session: SessionDep, admin: AdminOnly):
    source = load_source(session, source_id)
    session.close()
    body = await request.body()
    if body.strip():
        rows = feeds.load_feed(body)  # FeedError: 422 saying what is wrong with it
        run = await run_in_threadpool(feed_sources.import_rows, source, rows, trigger="upload", by=admin.subject)
    elif source.url:
        run = await run_in_threadpool(feed_sources.import_from_url, source, trigger="admin", by=admin.subject)
    else:
        raise service.InvalidInput("body", "this source has no url: send the feed (a JSON list) as the body")
    if run.status == "failed":
        raise HTTPException(422,
                            detail=f"{run.error}. Nothing was changed (run {run.id} records it).")
    return run


@router.post("/import-runs/{run_id}/confirm", response_model=ImportRunOut,
             summary="Apply a held run as it was (withdrawing the meetings it no longer lists)")
def confirm_run(run_id: RunId, admin: AdminOnly):
    return _decide(run_id, confirm=True, by=admin.subject)


@router.post("/import-runs/{run_id}/discard", response_model=ImportRunOut, summary="Discard a held run: nothing changes")
def discard_run(run_id: RunId, admin: AdminOnly):
    return _decide(run_id, confirm=False, by=admin.subject)


def _decide(run_id: int, *, confirm: bool, by: str) -> ImportRun:
    try:
        return feed_sources.decide(run_id, confirm=confirm, by=by)
    except feed_sources.NothingToDecide as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from exc
