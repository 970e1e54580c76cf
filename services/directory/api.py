"""The directory's HTTP API: public meeting search and feed; admin meetings, feeds and sites; engagement."""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any, Literal

from fastapi import Body, Depends, HTTPException, Query, Request, status
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from services.directory import admin_api, engagement, feeds, search, service
from services.directory.admin import setup_admin
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
    MeetingIn,
    MeetingOut,
    MeetingPage,
    MeetingResult,
    SearchIn,
    SiteIn,
    SiteOut,
    WithdrawIn,
)
from shared.auth import AdminOnly, CurrentPrincipal, Role
from shared.events import utcnow
from shared.pages import setup_pages
from shared.types import InputDate
from shared.web import PublicRateLimit, make_app

SessionDep = Annotated[Session, Depends(runtime.get_session)]

app = make_app(service="directory", settings=runtime.settings, engine=lambda: runtime.engine,
               title="FAMA directory", description="Mutual-aid meetings, pilot sites and engagement counters.")


def _errors_response(errors: list[dict]) -> JSONResponse:
    summary = "; ".join(f"{e['field'] or 'request'}: {e['message']}" for e in errors)
    return JSONResponse({"detail": summary, "errors": errors}, status_code=422)


@app.exception_handler(service.InvalidInput)
async def invalid_input(_request: Request, exc: service.InvalidInput):
    return _errors_response([{"field": exc.field, "message": exc.message, "type": "invalid"}])


@app.exception_handler(ValidationError)
async def invalid_model(_request: Request, exc: ValidationError):
    return _errors_response([{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"], "type": e["type"]}
                             for e in exc.errors()])


@app.exception_handler(service.NotFound)
async def not_found(_request: Request, exc: service.NotFound):
    return JSONResponse({"detail": str(exc)}, status_code=404)


@app.exception_handler(service.MeetingExists)
@app.exception_handler(service.Conflict)
async def conflict(_request: Request, exc: Exception):
    return JSONResponse({"detail": str(exc)}, status_code=409)


@app.exception_handler(engagement.NotVisible)
async def not_visible(_request: Request, exc: engagement.NotVisible):
    return JSONResponse({"detail": str(exc)}, status_code=403)


@app.exception_handler(feeds.FeedError)
async def bad_feed(_request: Request, exc: feeds.FeedError):
    return JSONResponse({"detail": str(exc), "errors": [{"field": "feed", "message": str(exc), "type": "feed"}]},
                        status_code=422)


# --- meetings -------------------------------------------------------------------------------

@app.get("/meetings", response_model=MeetingPage, tags=["meetings"],
         summary="Search meetings (public)", dependencies=[PublicRateLimit])
def search_meetings(
    session: SessionDep,
    near: Annotated[str | None, Query(description="UK postcode (full or outward code) or 'lat,lng'", max_length=60)] = None,
    radius_km: Annotated[float, Query(gt=0, le=200)] = 10.0,
    day: Annotated[int | None, Query(ge=0, le=6, description="0-6, Sunday = 0")] = None,
    starts_after: Annotated[str | None, Query(pattern=TIME_PATTERN, description="HH:MM local")] = None,
    starts_before: Annotated[str | None, Query(pattern=TIME_PATTERN, description="HH:MM local")] = None,
    fellowship: Annotated[str | None, Query(pattern=FELLOWSHIP_PATTERN, max_length=64)] = None,
    types: Annotated[list[str], Query(description="Type codes, all must match (repeat or comma-separate)")] = [],  # noqa: B006
    attendance: Annotated[Literal["in_person", "hybrid", "online"] | None, Query()] = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int | None, Query(ge=0)] = None,
    page: Annotated[int | None, Query(ge=1, description="1-based page of `limit` results (instead of offset)")] = None,
):
    codes = [c.strip() for value in types for c in value.split(",") if c.strip()]
    unknown = [c for c in codes if c not in TYPE_NAMES]
    if unknown:
        raise service.InvalidInput("types", f"unknown Meeting Guide type code(s): {', '.join(unknown)}")
    if starts_after and starts_before and starts_after > starts_before:
        raise service.InvalidInput("starts_before", "starts_before is earlier than starts_after")
    if offset is None:
        offset = (page - 1) * limit if page else 0
    search_in = SearchIn(near=near, radius_km=radius_km, day=day, starts_after=starts_after, starts_before=starts_before,
                         fellowship=fellowship, types=codes, attendance=attendance, q=q, limit=limit, offset=offset)
    found = search.search_meetings(session, search_in=search_in)
    now = utcnow()
    results = []
    for meeting, distance in found["results"]:
        results.append(MeetingResult.model_validate({
            **MeetingOut.model_validate(meeting).model_dump(exclude={"type_names"}),
            "distance_km": None if distance is None else round(distance, 2),
            **_next_start(meeting, now),
        }))
    return MeetingPage(total=found["total"], limit=limit, offset=offset, near=found["near"], results=results)


@app.get("/meetings/{slug}", response_model=MeetingResult, tags=["meetings"],
         summary="One meeting (public)", dependencies=[PublicRateLimit])
def get_meeting(slug: str, session: SessionDep):
    meeting = service.get_meeting(session, slug)
    return MeetingResult.model_validate({
        **MeetingOut.model_validate(meeting).model_dump(exclude={"type_names"}),
        **(_next_start(meeting) if meeting.active else {}),
    })


def _next_start(meeting, now: dt.datetime | None = None) -> dict:
    start = search.next_start(meeting, now)
    if start is None:
        return {}
    return {"next_start_local": start.isoformat(), "next_start_utc": start.astimezone(dt.UTC).isoformat()}


@app.post("/meetings", response_model=MeetingAdminOut, status_code=status.HTTP_201_CREATED, tags=["meetings"])
def create_meeting(meeting_in: MeetingIn, session: SessionDep, admin: AdminOnly):
    meeting = service.create_meeting(session, meeting_in=meeting_in, by=admin.subject)
    session.commit()
    return meeting


@app.put("/meetings/{slug}", response_model=MeetingAdminOut, tags=["meetings"], summary="Replace a meeting's fields")
def replace_meeting(slug: str, meeting_in: MeetingIn, session: SessionDep, admin: AdminOnly):
    meeting, _changed = service.update_meeting(session, slug=slug, meeting_in=meeting_in, by=admin.subject)
    session.commit()
    return meeting


@app.patch("/meetings/{slug}", response_model=MeetingAdminOut, tags=["meetings"], summary="Change some of a meeting's fields")
def patch_meeting(slug: str, session: SessionDep, admin: AdminOnly,
                  changes: Annotated[dict[str, Any], Body(examples=[{"time": "19:30"}])]):
    meeting = service.get_meeting(session, slug)
    meeting_in = MeetingIn.model_validate({**service.meeting_in_of(meeting), **changes})
    meeting, _changed = service.update_meeting(session, slug=slug, meeting_in=meeting_in, by=admin.subject)
    session.commit()
    return meeting


@app.post("/meetings/{slug}/withdraw", response_model=MeetingAdminOut, tags=["meetings"])
def withdraw_meeting(slug: str, session: SessionDep, admin: AdminOnly, withdraw_in: WithdrawIn | None = None):
    meeting = service.withdraw_meeting(session, slug=slug, reason=withdraw_in.reason if withdraw_in else None,
                                       by=admin.subject)
    session.commit()
    return meeting


@app.get("/meeting-types", tags=["meetings"], summary="Meeting Guide type codes and fellowships")
def meeting_types() -> dict:
    return {"types": [{"code": c, "name": n} for c, n in TYPE_NAMES.items()],
            "fellowships": [{"code": c, "name": n} for c, n in FELLOWSHIPS.items()]}


# --- feeds ----------------------------------------------------------------------------------

@app.get("/feeds/meeting-guide.json", tags=["feeds"],
         summary="Meeting Guide feed of all live meetings (public)", dependencies=[PublicRateLimit])
def export_feed(session: SessionDep) -> list[dict]:
    return feeds.export_feed(session)


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
    try:
        data = json.loads(body)
    except ValueError:
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
    site = service.create_site(session, site_in=site_in)
    session.commit()
    return site


@app.get("/sites", response_model=list[SiteOut], tags=["sites"], summary="Pilot sites you may see")
def list_sites(session: SessionDep, principal: CurrentPrincipal):
    return session.scalars(engagement.visible_sites(principal)).all()


@app.get("/sites/{site_id}", response_model=SiteOut, tags=["sites"])
def get_site(site_id: str, session: SessionDep, principal: CurrentPrincipal):
    return engagement.visible_site(session, principal, site_id)


@app.put("/sites/{site_id}", response_model=SiteOut, tags=["sites"])
def replace_site(site_id: str, site_in: SiteIn, session: SessionDep, _admin: AdminOnly):
    site = service.update_site(session, site_id=site_id, site_in=site_in)
    session.commit()
    return site


@app.patch("/sites/{site_id}", response_model=SiteOut, tags=["sites"])
def patch_site(site_id: str, session: SessionDep, _admin: AdminOnly, changes: Annotated[dict[str, Any], Body()]):
    site = service.get_site(session, site_id)
    site = service.update_site(session, site_id=site_id, site_in=SiteIn.model_validate({**service.site_in_of(site), **changes}))
    session.commit()
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
