from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from shared.events import AttendanceOption, MeetingSnapshot

TIME_PATTERN = r"^([01]\d|2[0-3]):[0-5]\d$"


class MeetingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    slug: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    name: str = Field(min_length=1, max_length=300)
    fellowship: str = Field(min_length=1, max_length=64)
    day: int | None = Field(None, ge=0, le=6, description="0-6, Sunday = 0")
    time: str | None = Field(None, pattern=TIME_PATTERN)
    end_time: str | None = Field(None, pattern=TIME_PATTERN)
    timezone: str = "Europe/London"
    types: list[str] = []
    attendance_option: AttendanceOption = "in_person"
    location: str | None = Field(None, max_length=300)
    formatted_address: str | None = Field(None, max_length=1000)
    postcode: str | None = Field(None, max_length=10)
    latitude: float | None = Field(None, ge=-90, le=90)
    longitude: float | None = Field(None, ge=-180, le=180)
    conference_url: str | None = Field(None, max_length=2000)
    conference_url_notes: str | None = Field(None, max_length=2000)
    conference_phone: str | None = Field(None, max_length=64)
    conference_phone_notes: str | None = Field(None, max_length=2000)
    site_id: str | None = Field(None, max_length=64)
    booking_required: bool = False


class MeetingOut(MeetingSnapshot):
    model_config = ConfigDict(from_attributes=True, extra="ignore")
