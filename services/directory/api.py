"""The directory's HTTP API: public meeting search and feed; admin meetings, feeds and sites; engagement."""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
from email.utils import format_datetime, parsedate_to_datetime
from typing import Annotated, Any, Literal

import anyio
import anyio.to_thread
from anyio.lowlevel import RunVar
from fastapi import Body, Depends, HTTPException, Query, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from prometheus_client import Counter
from pydantic import ValidationError
from pydantic_core import to_json
from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from services.directory import admin_api, answers, engagement, feeds, search, service
from services.directory.admin import setup_admin
from services.directory.config import get_settings
from services.directory.models import Meeting
from services.directory.pages import router as pages_router
from services.directory.pages import templates as page_templates
from services.directory.reference import FELLOWSHIPS, TYPE_NAMES
from services.directory.runtime import runtime
from services.directory.schemas import (
    FELLOWSHIP_PATTERN,
    TIME_PATTERN,
    FeedUrlIn,
    ImportReport,
    MeetingAdminOut,
    MeetingExceptionIn,
    MeetingIn,
    MeetingPage,
    MeetingResult,
    SearchIn,
    SiteIn,
    SiteOut,
    WithdrawIn,
)
from shared import queues
from shared.auth import AdminOnly, CurrentPrincipal, Role
from shared.db import unit_of_work
from shared.events import utcnow
from shared.meeting_time import closures_before, meeting_guide_weekday
from shared.metrics import backbone_metrics
from shared.pages import setup_pages
from shared.types import InputDate
from shared.web import PublicRateLimit, make_app

SessionDep = Annotated[Session, Depends(runtime.get_session)]

app = make_app(service="directory", settings=runtime.settings, engine=lambda: runtime.engine,
               title="FAMA directory", description="Mutual-aid meetings, pilot sites and engagement counters.")
# /metrics: the outbox, the events queue, refused events and inbox lag (shared/metrics.py).
app.state.metrics_registry.register(backbone_metrics(runtime, queues=[queues.events_queue("directory")]))
# How often the public search and meeting JSON were answered from what this process kept (answers.py).
kept_answers = Counter("fama_directory_public_answers_total", "Public searches and meetings answered, by whether "
                       "an answer kept from before served", ["kept"], registry=app.state.metrics_registry)


def _errors_response(errors: list[dict]) -> JSONResponse:
    summary = "; ".join(f"{e['field'] or 'request'}: {e['message']}" for e in errors)
    return JSONResponse({"detail": summary, "errors": errors}, status_code=422)


@app.exception_handler(ValidationError)
async def invalid_model(_request: Request, exc: ValidationError):
    errors = [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"], "type": e["type"]} for e in exc.errors()]
    summary = "; ".join(f"{e['field'] or 'request'}: {e['message']}" for e in errors)
    return JSONResponse({"detail": summary, "errors": errors}, status_code=422)


# --- meetings -------------------------------------------------------------------------------

class KeptRoute(APIRoute):
    """A public route whose answers are kept until they could read differently (answers.py): a kept
    answer is sent before FastAPI reads and validates the parameters, which cost more than sending
    it. Only what was answered 200 is kept, so a kept answer's path and query were valid."""

    def get_route_handler(self):
        make, kept = super().get_route_handler(), self.endpoint.kept_in

        async def kept_or_made(request: Request) -> Response:
            stamp = await answers.stamp(request)  # counts the public rate limit too (429 when over)
            minute = answers.minute_now()
            body = kept.get(answers.key_of(request.scope), stamp, minute) if stamp is not None else None
            kept_answers.labels("yes" if body is not None else "no").inc()
            if body is not None:
                return Response(body, media_type="application/json")
            if stamp is not None:
                request.scope[answers.KEEPING] = answers.Keeping(stamp, minute, kept)
            return await make(request)

        return kept_or_made


def kept_get(path: str, kept_in: answers.Answers, **route):
    """``@app.get`` for a KeptRoute whose answers are kept in ``kept_in`` (in the app's own routes, where
    the 405 answer's Allow header and the OpenAPI document find it)."""
    def register(endpoint):
        endpoint.kept_in = kept_in
        app.router.add_api_route(path, endpoint, methods=["GET"], route_class_override=KeptRoute, **route)
        return endpoint
    return register


@kept_get("/meetings", answers.searches, response_model=MeetingPage, tags=["meetings"],
          summary="Search meetings (public)", dependencies=[PublicRateLimit])
async def search_meetings(
    request: Request,
    near: Annotated[str | None, Query(description="UK postcode (full or outward code), UK town, village or city "
                                                  "('Newport, Isle of Wight' where several share the name) "
                                                  "or 'lat,lng'", max_length=60)] = None,
    radius_km: Annotated[float, Query(gt=0, le=200)] = 10.0,
    day: Annotated[list[int], Query(description="0-6, Sunday = 0; repeat for several days")] = [],  # noqa: B006
    date: Annotated[InputDate | None, Query(description="Meetings on this date (YYYY-MM-DD), from today")] = None,
    starts_after: Annotated[str | None, Query(pattern=TIME_PATTERN, description="HH:MM local")] = None,
    starts_before: Annotated[str | None, Query(pattern=TIME_PATTERN, description="HH:MM local")] = None,
    fellowship: Annotated[str | None, Query(pattern=FELLOWSHIP_PATTERN, max_length=64)] = None,
    types: Annotated[list[str], Query(description="Type codes, all must match (repeat or comma-separate)")] = [],  # noqa: B006
    attendance: Annotated[Literal["in_person", "hybrid", "online"] | None, Query()] = None,
    q: Annotated[str | None, Query(max_length=200, description="Words in the name, venue, address or notes")] = None,
    sort: Annotated[Literal["distance", "soonest"] | None,
                    Query(description="distance (the default with near) or soonest: next start from now")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int | None, Query(ge=0)] = None,
    page: Annotated[int | None, Query(ge=1, description="1-based page of `limit` results (instead of offset)")] = None,
):
    return await _kept_answer(request, functools.partial(
        _search_page, near=near, radius_km=radius_km, day=day, date=date, starts_after=starts_after,
        starts_before=starts_before, fellowship=fellowship, types=types, attendance=attendance, q=q, sort=sort,
        limit=limit, offset=offset, page=page, keeping=request.scope.get(answers.KEEPING)))


# Public answers are made in at most this many threads at once per process (the others wait their
# turn): more only fight over the interpreter lock, and the event loop serving kept answers waits
# for it too (docs/PERFORMANCE.md §10). Other endpoints keep the default thread pool.
PUBLIC_ANSWER_THREADS = 2
_public_answer_threads: RunVar[anyio.CapacityLimiter] = RunVar("fama_public_answer_threads")


def public_answer_threads() -> anyio.CapacityLimiter:
    """This event loop's limiter of the threads making public answers."""
    try:
        return _public_answer_threads.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(PUBLIC_ANSWER_THREADS)
        _public_answer_threads.set(limiter)
        return limiter


async def _kept_answer(request: Request, make) -> Response:
    """``make()``'s answer (JSON bytes), made in a worker thread, and kept under the stamp KeptRoute read
    (none was kept for this path and query) until it could read differently (answers.kept_until)."""
    keeping: answers.Keeping | None = request.scope.get(answers.KEEPING)

    def made() -> tuple[bytes, int | None]:
        body = make()
        return body, answers.kept_until(keeping.minute, keeping.stamp) if keeping else None

    body, until = await anyio.to_thread.run_sync(made, limiter=public_answer_threads())
    if keeping:
        keeping.answers.put(answers.key_of(request.scope), keeping.stamp, until, body, minute=keeping.minute)
    return Response(body, media_type="application/json")


def _search_page(*, near, radius_km, day, date, starts_after, starts_before, fellowship, types, attendance, q, sort,
                 limit, offset, page, now: dt.datetime | None = None,
                 keeping: answers.Keeping | None = None) -> bytes:
    """The search's JSON (a MeetingPage). ``keeping``: what the answer will be kept under (KeptRoute), or
    None; ``now``: the clock's (tests)."""
    codes = [c.strip() for value in types for c in value.split(",") if c.strip()]
    unknown = [c for c in codes if c not in TYPE_NAMES]
    if unknown:
        raise service.InvalidInput("types", f"unknown Meeting Guide type code(s): {', '.join(unknown)}")
    if any(not 0 <= d <= 6 for d in day):
        raise service.InvalidInput("day", "each day must be 0-6, Sunday = 0")
    if starts_after and starts_before and starts_after > starts_before:
        raise service.InvalidInput("starts_before", "starts_before is earlier than starts_after")
    if near is not None and not near.strip():
        raise service.InvalidInput("near", "is empty: give a UK postcode, a town or 'latitude,longitude', or leave it out")
    if q is not None and not any(ch.isalnum() for ch in q):
        raise service.InvalidInput("q", "has no letters or numbers to search for")
    if sort == "distance" and not near:
        raise service.InvalidInput("sort", "distance needs near: a postcode, a place or 'latitude,longitude'")
    clock = now = now or utcnow()
    days = list(day)
    if date is not None:
        start = search.start_of(date)
        if day:
            raise service.InvalidInput("date", "give a date or days of the week, not both")
        if date < now.astimezone(start.tzinfo).date():
            raise service.InvalidInput("date", f"{date.isoformat()} has passed: give today or a later date")
        now, days = max(now, start), [meeting_guide_weekday(date)]
    if offset is None:
        offset = (page - 1) * limit if page else 0
    search_in = SearchIn(near=near, radius_km=radius_km, days=days, starts_after=starts_after,
                         starts_before=starts_before, fellowship=fellowship, types=codes, attendance=attendance,
                         q=q, sort=sort, limit=limit, offset=offset, now=now, on_date=date)
    ids = answers.scheduled_ids(keeping.minute, keeping.stamp) if keeping else None
    # Closed here, in the endpoint's thread; reads only (no BEGIN or ROLLBACK round trip on Postgres).
    with runtime.reads() as session:
        found = search.search_meetings(session, search_in=search_in, scheduled_ids=ids, ids_only=True)
        shown = _results_shown(session, [row.id for row, _ in found["results"] + found["beyond"]], now,
                               keeping=keeping, later=now != clock)
    envelope = MeetingPage(total=found["total"], limit=limit, offset=offset, near=found["near"], results=[])
    return _page_body(envelope.model_dump_json(by_alias=True).encode(),
                      [_at_distance(shown[row.id], d) for row, d in found["results"] if row.id in shown],
                      [_at_distance(shown[row.id], d) for row, d in found["beyond"] if row.id in shown])


def _results_shown(session: Session, ids: list[int], now: dt.datetime, *, keeping: answers.Keeping | None,
                   later: bool) -> dict[int, bytes]:
    """Each meeting's JSON as a search result at ``now``, its distance left out (``"distance_km":null``).

    Kept with the answers (answers.results), under the same stamp and to the same minute, so a search
    made afresh builds only the meetings that no search showed since; ``later``: ``now`` is a date's
    start (a search of a later date), not the clock's, so what is kept of it is its own."""
    shown, key = {}, (now if later else None)
    if keeping:
        for i in ids:
            body = answers.results.get((i, key), keeping.stamp, keeping.minute)
            if body is not None:
                shown[i] = body
    missing = [i for i in ids if i not in shown]
    if missing:
        until = answers.kept_until(keeping.minute, keeping.stamp) if keeping else None
        for row in session.execute(_rows_query(), {"ids": missing}):
            shown[row.id] = body = _result(row, None, now).model_dump_json(by_alias=True).encode()
            if keeping:
                answers.results.put((row.id, key), keeping.stamp, until, body, minute=keeping.minute)
    return shown


def _result(meeting, distance: float | None, now: dt.datetime) -> MeetingResult:
    """A search's row (search.public_columns) as a result: one validation of a dict, which pydantic
    does in its Rust core (reading a row's attributes one by one cost a third of a search)."""
    occurrence, happening = search.next_and_happening(meeting, now)
    start = occurrence.start if occurrence is not None else None
    scheduled = {} if meeting.weekly or occurrence is None else {
        "next_note": occurrence.note, "next_changed": occurrence.changed,
        "closed_before_next": [{"date": c.date, "note": c.note}
                               for c in closures_before(meeting, after=now, until=start)]}
    return MeetingResult.model_validate({
        **meeting._mapping, "distance_km": None if distance is None else round(distance, 2),
        "happening": happening,
        "next_start_local": start.isoformat() if start is not None else None,
        "next_start_utc": start.astimezone(dt.UTC).isoformat() if start is not None else None, **scheduled})


@functools.cache
def _rows_query():
    return select(*search.public_columns()).where(Meeting.id.in_(bindparam("ids", expanding=True)))


NO_DISTANCE = b'"distance_km":null'
NO_RESULTS = b'"results":[],"beyond":[]}'


def _at_distance(result: bytes, distance: float | None) -> bytes:
    """A result's JSON (``_results_shown``) at ``distance``, written as pydantic writes it. Quotes inside a
    JSON string are escaped, so the first ``"distance_km":null`` is the result's own field."""
    if distance is None:
        return result
    return result.replace(NO_DISTANCE, b'"distance_km":' + to_json(round(distance, 2)), 1)


def _page_body(envelope: bytes, results: list[bytes], beyond: list[bytes]) -> bytes:
    """A MeetingPage's JSON from its JSON with no results (which ends with them) and each result's."""
    if not envelope.endswith(NO_RESULTS):
        raise AssertionError("MeetingPage no longer ends with its results and beyond")
    return b"".join((envelope[:-len(NO_RESULTS)], b'"results":[', b",".join(results), b'],"beyond":[',
                     b",".join(beyond), b"]}"))


def _warm_up() -> None:
    """Before the first request (shared/web.py): a search with each common filter and a meeting's JSON
    made once, so that their statements are compiled, a database connection is open and pydantic's
    serialisers are built (the first search after a start otherwise took ~140 ms); and the meetings
    as searches show them kept, as many as their share holds (each new search computed them first)."""
    stamp = answers.current_stamp()
    keeping = answers.Keeping(stamp, answers.minute_now(), answers.searches) if stamp is not None else None
    for filters in ({}, {"day": [1]}, {"fellowship": "aa"}):
        _search_page(**{"near": "51.5072,-0.1276", "radius_km": 10.0, "day": [], "date": None, "starts_after": None,
                        "starts_before": None, "fellowship": None, "types": [], "attendance": None, "q": None,
                        "sort": None, "limit": 20, "offset": None, "page": None, **filters}, keeping=keeping)
    with runtime.reads() as session:
        ids = session.scalars(select(Meeting.id).where(Meeting.active.is_(True)).order_by(Meeting.id)).all()
        if ids:
            _meeting(session.scalar(select(Meeting.slug).where(Meeting.id == ids[0])))
        now = utcnow()
        for start in range(0, len(ids) if keeping else 0, 500):
            if answers.results.size > answers.RESULT_BYTES * 0.9:
                break
            _results_shown(session, ids[start:start + 500], now, keeping=keeping, later=False)


app.state.warm_up.append(_warm_up)


@kept_get("/meetings/{slug}", answers.meetings, response_model=MeetingResult, tags=["meetings"],
          summary="One meeting (public)", dependencies=[PublicRateLimit])
async def get_meeting(request: Request, slug: str):
    return await _kept_answer(request, lambda: _meeting(slug).model_dump_json(by_alias=True).encode())



def _meeting(slug: str, now: dt.datetime | None = None) -> MeetingResult:
    """A meeting's public JSON from its public columns (search.public_columns), validated once from a
    dict like a search's results: loading the whole ORM object decrypted the facilitator's and the
    feed contacts' fields, which this answer never shows."""
    with runtime.reads() as session:  # closed in this thread, like the search's
        meeting = session.execute(_meeting_query(), {"slug": slug}).first()
    if meeting is None:
        raise service.NotFound(f"no meeting with slug {slug!r}")
    now = now or utcnow()
    occurrence = search.next_of(meeting, now) if meeting.active else None
    start = occurrence.start if occurrence is not None else None
    shown = {} if start is None else {
        "next_start_local": start.isoformat(), "next_start_utc": start.astimezone(dt.UTC).isoformat(),
        "next_note": occurrence.note, "next_changed": occurrence.changed,
        "closed_before_next": [{"date": c.date, "note": c.note} for c in closures_before(meeting, after=now, until=start)]}
    return MeetingResult.model_validate({**meeting._mapping, **shown})


@functools.cache
def _meeting_query():
    return select(*search.public_columns()).where(Meeting.slug == bindparam("slug"))


@app.post("/meetings", response_model=MeetingAdminOut, status_code=status.HTTP_201_CREATED, tags=["meetings"])
def create_meeting(meeting_in: MeetingIn, session: SessionDep, admin: AdminOnly):
    with unit_of_work(session):
        meeting = service.create_meeting(session, meeting_in=meeting_in, by=admin.subject)
    return meeting


@app.put("/meetings/{slug}", response_model=MeetingAdminOut, tags=["meetings"], summary="Replace a meeting's fields")
def replace_meeting(slug: str, meeting_in: MeetingIn, session: SessionDep, admin: AdminOnly):
    with unit_of_work(session):
        meeting, _changed = service.update_meeting(session, slug=slug, meeting_in=meeting_in, by=admin.subject)
    return meeting


@app.patch("/meetings/{slug}", response_model=MeetingAdminOut, tags=["meetings"], summary="Change some of a meeting's fields")
def patch_meeting(slug: str, session: SessionDep, admin: AdminOnly,
                  changes: Annotated[dict[str, Any], Body(examples=[{"time": "19:30"}])]):
    with unit_of_work(session):
        meeting = service.get_meeting(session, slug)
        meeting_in = MeetingIn.model_validate({**service.meeting_in_of(meeting), **changes})
        meeting, _changed = service.update_meeting(session, slug=slug, meeting_in=meeting_in, by=admin.subject)
    return meeting


@app.post("/meetings/{slug}/withdraw", response_model=MeetingAdminOut, tags=["meetings"])
def withdraw_meeting(slug: str, session: SessionDep, admin: AdminOnly, withdraw_in: WithdrawIn | None = None):
    with unit_of_work(session):
        meeting = service.withdraw_meeting(session, slug=slug, reason=withdraw_in.reason if withdraw_in else None,
                                           by=admin.subject)
    return meeting


@app.post("/meetings/{slug}/exceptions", response_model=MeetingAdminOut, tags=["meetings"],
          summary="Close one dated occurrence, or change it (another start time, a note); replaces that date's")
def set_meeting_exception(slug: str, exception_in: MeetingExceptionIn, session: SessionDep, admin: AdminOnly):
    with unit_of_work(session):
        meeting = service.set_exception(session, slug=slug, exception_in=exception_in, by=admin.subject)
    return meeting


@app.delete("/meetings/{slug}/exceptions/{date}", response_model=MeetingAdminOut, tags=["meetings"],
            summary="That date's occurrence is as usual again")
def remove_meeting_exception(slug: str, date: dt.date, session: SessionDep, admin: AdminOnly):
    with unit_of_work(session):
        meeting = service.remove_exception(session, slug=slug, date=date, by=admin.subject)
    return meeting


@app.get("/meeting-types", tags=["meetings"], summary="Meeting Guide type codes and fellowships")
def meeting_types() -> dict:
    return {"types": [{"code": c, "name": n} for c, n in TYPE_NAMES.items()],
            "fellowships": [{"code": c, "name": n} for c, n in FELLOWSHIPS.items()]}


# --- feeds ----------------------------------------------------------------------------------

# Other finders (TSML UI, a fellowship's own site) read the feed from their pages: any origin may GET it.
FEED_CORS = {"Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": "ETag, Last-Modified"}


@app.get("/feeds/meeting-guide.json", tags=["feeds"], response_model=list[dict],
         summary="Meeting Guide feed of all live meetings (public; CORS, ETag and Last-Modified for 304s)",
         dependencies=[PublicRateLimit], responses={304: {"description": "Not changed since the copy you have"}})
def export_feed(request: Request, session: SessionDep) -> Response:
    body = json.dumps(jsonable_encoder(feeds.export_feed(session)), ensure_ascii=False, separators=(",", ":")).encode()
    etag = f'"{hashlib.sha256(body).hexdigest()[:32]}"'
    # A meeting added, changed or withdrawn moves one of these (withdrawing sets ``updated``).
    moments = [m for m in session.execute(select(func.max(Meeting.updated), func.max(Meeting.created_at))).one() if m]
    changed = max(moments) if moments else None
    headers = {**FEED_CORS, "ETag": etag, "Cache-Control": "public, max-age=300"}
    if changed is not None:
        headers["Last-Modified"] = format_datetime(changed.astimezone(dt.UTC).replace(microsecond=0), usegmt=True)
    if _not_modified(request, etag, changed):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


def _not_modified(request: Request, etag: str, changed: dt.datetime | None) -> bool:
    """RFC 9110 13.1: If-None-Match decides when sent; else If-Modified-Since (to the second)."""
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None:
        sent = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
        return "*" in sent or etag in sent
    since = request.headers.get("if-modified-since")
    if since and changed is not None:
        try:
            when = parsedate_to_datetime(since)
        except (TypeError, ValueError):
            return False
        return when.tzinfo is not None and changed.replace(microsecond=0) <= when
    return False


@app.options("/feeds/meeting-guide.json", include_in_schema=False)
def feed_preflight() -> Response:
    return Response(status_code=204, headers={**FEED_CORS, "Access-Control-Allow-Methods": "GET",
                                              "Access-Control-Allow-Headers": "If-None-Match, If-Modified-Since",
                                              "Access-Control-Max-Age": "86400"})


@app.post("/feeds/import", response_model=ImportReport, tags=["feeds"],
          summary="Import a Meeting Guide feed: the JSON list as the body, or {\"url\": ...}")
async def import_feed(
    request: Request,
    _admin: AdminOnly,
    source: Annotated[str, Query(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")],
    fellowship: Annotated[str, Query(pattern=FELLOWSHIP_PATTERN, max_length=64)] = "aa",
    timezone: Annotated[str, Query(max_length=64)] = "Europe/London",
):
    _valid_timezone(timezone)
    body = await request.body()
    limit = get_settings().feed_max_bytes
    if len(body) > limit:
        raise feeds.FeedError(f"the feed is larger than {limit} bytes")
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        data = None  # load_feed says what is wrong with it
    if isinstance(data, dict):
        url_in = FeedUrlIn.model_validate(data)
        rows = await _in_thread(feeds.fetch_feed, url_in.url)
    else:
        rows = feeds.load_feed(body)
    return await _in_thread(_import, rows, source, fellowship, timezone)


def _valid_timezone(timezone: str) -> None:
    try:
        MeetingIn.iana_timezone(timezone)
    except ValueError as exc:
        raise service.InvalidInput("timezone", str(exc)) from exc


async def _in_thread(fn, *args):
    return await run_in_threadpool(fn, *args)


def _import(rows: list, source: str, fellowship: str, timezone: str) -> ImportReport:
    with runtime.transaction() as session:
        return feeds.import_feed(session, rows=rows, source=source, fellowship=fellowship, timezone=timezone)


# --- sites ----------------------------------------------------------------------------------

@app.post("/sites", response_model=SiteOut, status_code=status.HTTP_201_CREATED, tags=["sites"])
def create_site(site_in: SiteIn, session: SessionDep, _admin: AdminOnly):
    with unit_of_work(session):
        site = service.create_site(session, site_in=site_in)
    return site


@app.get("/sites", response_model=list[SiteOut], tags=["sites"], summary="Pilot sites you may see")
def list_sites(session: SessionDep, principal: CurrentPrincipal):
    return session.scalars(engagement.visible_sites(principal)).all()


@app.get("/sites/{site_id}", response_model=SiteOut, tags=["sites"])
def get_site(site_id: str, session: SessionDep, principal: CurrentPrincipal):
    return engagement.visible_site(session, principal, site_id)


@app.put("/sites/{site_id}", response_model=SiteOut, tags=["sites"])
def replace_site(site_id: str, site_in: SiteIn, session: SessionDep, _admin: AdminOnly):
    with unit_of_work(session):
        site = service.update_site(session, site_id=site_id, site_in=site_in)
    return site


@app.patch("/sites/{site_id}", response_model=SiteOut, tags=["sites"])
def patch_site(site_id: str, session: SessionDep, _admin: AdminOnly, changes: Annotated[dict[str, Any], Body()]):
    with unit_of_work(session):
        site = service.get_site(session, site_id)
        site_in = SiteIn.model_validate({**service.site_in_of(site), **changes})
        site = service.update_site(session, site_id=site_id, site_in=site_in)
    return site


# --- engagement -----------------------------------------------------------------------------

EngagementFormat = Annotated[Literal["json", "csv"], Query(description="json, or csv for a spreadsheet")]
DateFrom = Annotated[InputDate | None, Query(alias="from", description="First day (YYYY-MM-DD)")]
DateTo = Annotated[InputDate | None, Query(alias="to", description="Last day (YYYY-MM-DD)")]
FellowshipFilter = Annotated[str | None, Query(pattern=FELLOWSHIP_PATTERN, max_length=64)]


CSV_OR_JSON = {200: {"content": {"application/json": {}, "text/csv": {}}}}


@app.get("/engagement", tags=["engagement"], responses=CSV_OR_JSON,
         summary="Engagement counters: commissioners their region (rounded, see docs/DISCLOSURE.md), admins all")
def engagement_figures(session: SessionDep, principal: CurrentPrincipal, date_from: DateFrom = None,
                       date_to: DateTo = None, fellowship: FellowshipFilter = None, format: EngagementFormat = "json"):
    if principal.role not in (Role.admin, Role.commissioner):
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            detail=f"your role ({principal.role.value}) may not do this: it needs one of the roles "
                                   "commissioner, admin; ask an administrator if you need it")
    scope = engagement.scope_of(session, principal)
    return _engagement_response(session, scope, date_from, date_to, fellowship, format,
                                where={"region": scope.region})


@app.get("/engagement.csv", tags=["engagement"], response_class=Response,
         responses={200: {"content": {"text/csv": {}}}}, summary="The same counters as CSV")
def engagement_csv(session: SessionDep, principal: CurrentPrincipal, date_from: DateFrom = None, date_to: DateTo = None,
                   fellowship: FellowshipFilter = None):
    return engagement_figures(session, principal, date_from, date_to, fellowship, "csv")


@app.get("/sites/{site_id}/engagement", tags=["engagement"], responses=CSV_OR_JSON,
         summary="One site's engagement counters")
def site_engagement(site_id: str, session: SessionDep, principal: CurrentPrincipal, date_from: DateFrom = None,
                    date_to: DateTo = None, fellowship: FellowshipFilter = None, format: EngagementFormat = "json"):
    scope = engagement.scope_of(session, principal, site_id=site_id)
    return _engagement_response(session, scope, date_from, date_to, fellowship, format, where={"site_id": site_id})


def _engagement_response(session, scope, date_from, date_to, fellowship, fmt, where):
    if date_from and date_to and date_from > date_to:
        raise service.InvalidInput("to", "the end date is before the start date")
    data = engagement.read(session, scope=scope, date_from=date_from, date_to=date_to, fellowship=fellowship)
    if fmt == "csv":
        return Response(engagement.csv_text(data), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": 'attachment; filename="engagement.csv"',
                                 "Cache-Control": "no-store"})
    return {
        **where,
        "from": date_from, "to": date_to, "fellowship": fellowship,
        "suppressed": data["protected"],
        "totals": data["totals"],
        "weeks": [{"week": w["week"], "week_start": w["week_start"], "counts": w["counts"]} for w in data["weeks"]],
        "sites": [{"site_id": s["site_id"], "counts": s["counts"]} for s in data["sites"]],
    }


# Pages: find a meeting (/), a meeting (/meeting/{slug}), the dashboard (/dashboard), sign-in, stylesheet.
setup_pages(app, page_templates)
app.include_router(admin_api.router)
setup_admin(app)
app.include_router(pages_router)
