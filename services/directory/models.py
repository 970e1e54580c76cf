from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, Boolean, DateTime, Float, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from shared.db import make_metadata
from shared.events import utcnow


class Base(DeclarativeBase):
    metadata = make_metadata()


class Site(Base):
    """A pilot site: the drug and alcohol service (host agency) running a FAMA pilot."""

    __tablename__ = "sites"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    host_agency: Mapped[str] = mapped_column(String(200))
    region: Mapped[str] = mapped_column(String(100), index=True)
    champion_name: Mapped[str | None] = mapped_column(String(200))
    champion_email: Mapped[str | None] = mapped_column(String(200))
    postcode: Mapped[str | None] = mapped_column(String(10))
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class Meeting(Base):
    """A mutual-aid meeting, keyed by its Meeting Guide slug."""

    __tablename__ = "meetings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    slug: Mapped[str] = mapped_column(String(200), unique=True)
    name: Mapped[str] = mapped_column(String(300))
    fellowship: Mapped[str] = mapped_column(String(64), index=True)
    day: Mapped[int | None] = mapped_column(Integer)
    time: Mapped[str | None] = mapped_column(String(5))
    end_time: Mapped[str | None] = mapped_column(String(5))
    timezone: Mapped[str] = mapped_column(String(64), default="Europe/London")
    types: Mapped[list[str]] = mapped_column(JSON, default=list)
    attendance_option: Mapped[str] = mapped_column(String(16), default="in_person")
    location: Mapped[str | None] = mapped_column(String(300))
    formatted_address: Mapped[str | None] = mapped_column(Text)
    postcode: Mapped[str | None] = mapped_column(String(10))
    latitude: Mapped[float | None] = mapped_column(Float)
    longitude: Mapped[float | None] = mapped_column(Float)
    conference_url: Mapped[str | None] = mapped_column(Text)
    conference_url_notes: Mapped[str | None] = mapped_column(Text)
    conference_phone: Mapped[str | None] = mapped_column(String(64))
    conference_phone_notes: Mapped[str | None] = mapped_column(Text)
    site_id: Mapped[str | None] = mapped_column(String(64), index=True)
    booking_required: Mapped[bool] = mapped_column(Boolean, default=False)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    updated: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)
