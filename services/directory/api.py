from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.directory import service
from services.directory.models import Meeting
from services.directory.runtime import runtime
from services.directory.schemas import MeetingIn, MeetingOut
from shared.auth import AdminOnly
from shared.web import make_app

SessionDep = Annotated[Session, Depends(runtime.get_session)]

app = make_app(service="directory", settings=runtime.settings, engine=lambda: runtime.engine,
               title="FAMA directory", description="Mutual-aid meetings, pilot sites and engagement counters.")


@app.post("/meetings", response_model=MeetingOut, status_code=status.HTTP_201_CREATED, tags=["meetings"])
def create_meeting(meeting_in: MeetingIn, session: SessionDep, _admin: AdminOnly):
    try:
        meeting = service.create_meeting(session, meeting_in=meeting_in)
    except service.MeetingExists as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, detail=str(exc)) from exc
    session.commit()
    return meeting


@app.get("/meetings/{slug}", response_model=MeetingOut, tags=["meetings"])
def get_meeting(slug: str, session: SessionDep):
    meeting = session.scalar(select(Meeting).where(Meeting.slug == slug))
    if meeting is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"no meeting with slug {slug!r}")
    return meeting
