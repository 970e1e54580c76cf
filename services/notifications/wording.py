"""What a reminder says: template files, discreet by default, every SMS saying how to stop.

A phone may be shared, so unless the client opted in to full detail a message names no
fellowship and no drink, drug or recovery word: only the time, the place and how to join.
Templates are Jinja2 files in ``templates/``; a deployment can put files of the same name
in ``NOTIFICATIONS_TEMPLATES_DIR`` to replace them.
"""

from __future__ import annotations

import datetime as dt
import re
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pydantic import BaseModel

from shared.events import MeetingSnapshot

BUILT_IN_TEMPLATES = Path(__file__).parent / "templates"
STOP_LINE = "Reply STOP to stop these messages"
EMAIL_FOOTER = "If you would rather not get these messages, tell your keyworker or reply STOP to our texts."

FELLOWSHIP_NAMES = {
    "aa": "Alcoholics Anonymous", "na": "Narcotics Anonymous", "ca": "Cocaine Anonymous", "smart": "SMART Recovery",
    "al-anon": "Al-Anon Family Groups", "alateen": "Alateen", "fa": "Families Anonymous",
    "smart-family-friends": "SMART Recovery Family & Friends", "ga": "Gamblers Anonymous",
    "ma": "Marijuana Anonymous", "cma": "Crystal Meth Anonymous", "other": "mutual aid",
}

# Words a discreet message must never contain (fellowships, drink, drugs, recovery).
INDISCREET_WORDS = (
    "aa", "na", "ca", "cma", "alcoholics", "alcoholic", "alcohol", "narcotics", "cocaine", "crack", "anonymous",
    "smart recovery", "recovery", "al-anon", "alanon", "alateen", "drink", "drinking", "drinks", "drug", "drugs",
    "addiction", "addict", "addicts", "sober", "sobriety", "twelve step", "12 step", "12-step", "substance",
    "heroin", "opiate", "opioid", "methadone", "meth", "marijuana", "cannabis", "gambling", "gamblers",
    "fellowship", "rehab", "detox", "big book",
)
_INDISCREET_RE = re.compile(r"(?<![\w-])(" + "|".join(re.escape(w) for w in INDISCREET_WORDS) + r")(?![\w-])", re.I)


def indiscreet_words(text: str) -> list[str]:
    return [m.group(0) for m in _INDISCREET_RE.finditer(text)]


class Message(BaseModel):
    channel: str
    subject: str | None = None
    body: str


def format_when(start: dt.datetime, *, with_date: bool = True, with_time: bool = True) -> str:
    """'Tuesday 4 March at 7:30pm' (local wall-clock time)."""
    hour = start.hour % 12 or 12
    clock = f"{hour}{start.strftime(':%M') if start.minute else ''}{'am' if start.hour < 12 else 'pm'}"
    day = f"{start:%A} {start.day} {start:%B}"
    if with_date and with_time:
        return f"{day} at {clock}"
    return day if with_date else clock


def venue_of(meeting: MeetingSnapshot, *, full: bool) -> str | None:
    """The place, in words that give nothing away in discreet mode (or None if online only)."""
    if meeting.attendance_option == "online":
        return None
    candidates = [meeting.location, meeting.formatted_address, meeting.postcode]
    if full:
        parts = [c for c in (meeting.location, meeting.formatted_address or meeting.postcode) if c]
        return ", ".join(parts) or None
    safe = [c for c in candidates if c and not indiscreet_words(c)]
    if not safe:
        return None
    # The safe address beats a bare postcode; a safe venue name goes first.
    if meeting.location in safe and len(safe) > 1 and safe[1] != meeting.location:
        return f"{safe[0]}, {safe[1]}"
    return safe[0]


def joining_of(meeting: MeetingSnapshot) -> str | None:
    if meeting.attendance_option not in ("online", "hybrid"):
        return None
    parts = []
    if meeting.conference_url:
        parts.append(meeting.conference_url)
    if meeting.conference_url_notes:
        parts.append(meeting.conference_url_notes)
    if meeting.conference_phone:
        parts.append(f"or call {meeting.conference_phone}")
    return " ".join(parts) or None


@lru_cache(maxsize=8)
def _environment(override: str | None) -> Environment:
    folders = [override, str(BUILT_IN_TEMPLATES)] if override else [str(BUILT_IN_TEMPLATES)]
    return Environment(loader=FileSystemLoader(folders), undefined=StrictUndefined, autoescape=False,  # noqa: S701 (plain text)
                       keep_trailing_newline=False, trim_blocks=True)


def render(*, kind: str, channel: str, meeting: MeetingSnapshot, start: dt.datetime, detail: str,
           previous_start: dt.datetime | None = None, now: dt.datetime | None = None,
           templates_dir: str | None = None) -> Message:
    tz = ZoneInfo(meeting.timezone)
    local = start.astimezone(tz)
    full = detail == "full"
    if kind == "hours_before":
        today = (now or dt.datetime.now(dt.UTC)).astimezone(tz).date()
        when = f"today at {format_when(local, with_date=False)}" if local.date() == today else format_when(local)
    elif kind == "follow_up":
        when = format_when(local, with_time=False)
    else:
        when = format_when(local)
    context = {
        "kind": kind, "full": full, "when": when,
        "previous_when": format_when(previous_start.astimezone(tz)) if previous_start else "",
        "venue": venue_of(meeting, full=full), "joining": joining_of(meeting),
        "meeting_name": meeting.name if full else "",
        "fellowship_name": FELLOWSHIP_NAMES.get(meeting.fellowship, meeting.fellowship) if full else "",
    }
    env = _environment(templates_dir)
    body = " ".join(env.get_template(f"{kind}.txt").render(context).split())
    if channel == "sms":
        # Enforced here, not in the templates, so a deployment's template cannot drop it.
        if not body.endswith(STOP_LINE):
            body = f"{body} {STOP_LINE}"
        return Message(channel="sms", body=body)
    subject = " ".join(env.get_template("email_subject.txt").render(context).split())
    return Message(channel="email", subject=subject, body=f"{body}\n\n{EMAIL_FOOTER}")
