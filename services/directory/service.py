"""Directory domain logic: plain functions the API, CLI, tasks and tests call."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.directory.models import Meeting
from services.directory.runtime import runtime
from services.directory.schemas import MeetingIn
from shared.events import MeetingSnapshot


class MeetingExists(ValueError):
    pass


def snapshot(meeting: Meeting) -> MeetingSnapshot:
    return MeetingSnapshot.model_validate(meeting, from_attributes=True)


def create_meeting(session: Session, *, meeting_in: MeetingIn) -> Meeting:
    if session.scalar(select(Meeting.id).where(Meeting.slug == meeting_in.slug)) is not None:
        raise MeetingExists(f"a meeting with slug {meeting_in.slug!r} already exists")
    meeting = Meeting(**meeting_in.model_dump())
    session.add(meeting)
    session.flush()
    runtime.outbox.record(session, "meeting.published", snapshot(meeting))
    return meeting
