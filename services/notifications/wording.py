"""What a reminder says: template files, discreet by default, every SMS saying how to stop.

A phone may be shared, so unless the client opted in to full detail a message names no
fellowship and no drink, drug or recovery word: only the time, the place and how to join.
Meeting text comes from third-party feeds, so in discreet mode each free-text part (venue,
address, joining link and its notes) goes in only if ``indiscreet_words`` finds nothing in it,
and the whole rendered message is checked again: if anything is found, the client gets the
built-in generic message of the same kind (time, "your meeting", how to stop) instead.

Every message fits its channel's limits: optional parts are dropped (joining notes, then the
joining details, then venue detail) until it does; nothing is cut mid-word, nothing fails.

Templates are Jinja2 files in ``templates/``; a deployment can put files of the same name
in ``NOTIFICATIONS_TEMPLATES_DIR`` to replace them.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pydantic import BaseModel

from services.notifications.kinds import DATE, KINDS, TODAY_OR_DATE_TIME
from shared.discretion import indiscreet_words
from shared.events import FELLOWSHIP_NAMES, MeetingSnapshot

BUILT_IN_TEMPLATES = Path(__file__).parent / "templates"
STOP_LINE = "Reply STOP to stop these messages"
EMAIL_FOOTER = "If you would rather not get these messages, tell your keyworker or reply STOP to our texts."

# GOV.UK Notify refuses a text longer than 918 characters (6 fragments of 153).
SMS_MAX_CHARS = 918
# Our own budget is 3 fragments: each fragment is billed, and a long text arrives in pieces.
# A text in the GSM-7 alphabet fits 160 characters in one fragment, 153 per fragment when split
# (3 fragments = 459); one character outside it (an emoji, a Welsh ŵ) makes the whole text UCS-2:
# 70 in one, 67 per fragment when split (3 fragments = 201).
SMS_MAX_FRAGMENTS = 3
# An email is a reminder, not a letter: a subject that shows whole in a phone's inbox and a body
# that still fits a long joining note.
EMAIL_SUBJECT_MAX_CHARS = 120
EMAIL_BODY_MAX_CHARS = 3000

class Message(BaseModel):
    channel: str
    subject: str | None = None
    body: str
    # Email only: the one-click unsubscribe link (List-Unsubscribe, GOV.UK Notify's one_click_unsubscribe_url).
    unsubscribe_url: str | None = None


# Typographic characters GOV.UK Notify would replace anyway, replaced here so a curly apostrophe
# does not make the whole text UCS-2 (a third of the length per fragment).
_TO_GSM = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
                         "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2033": '"', "\u2010": "-", "\u2011": "-",
                         "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2015": "-", "\u2026": "...",
                         "\u00a0": " ", "\u2009": " ", "\u202f": " "})
_GSM_BASIC = set("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                 "ÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")
_GSM_EXTENDED = set("^{}\\[~]|€\f")  # two characters' room each


def sms_fragments(text: str) -> int:
    """How many fragments a text is sent as."""
    if all(c in _GSM_BASIC or c in _GSM_EXTENDED for c in text):
        length, single, part = sum(2 if c in _GSM_EXTENDED else 1 for c in text), 160, 153
    else:
        length, single, part = len(text.encode("utf-16-le")) // 2, 70, 67
    return 1 if length <= single else math.ceil(length / part)


def fits(message: Message) -> bool:
    """Within the channel's limits (see SMS_MAX_FRAGMENTS and EMAIL_*_MAX_CHARS)."""
    if message.channel == "sms":
        return len(message.body) <= SMS_MAX_CHARS and sms_fragments(message.body) <= SMS_MAX_FRAGMENTS
    return len(message.subject or "") <= EMAIL_SUBJECT_MAX_CHARS and len(message.body) <= EMAIL_BODY_MAX_CHARS


def gives_away(message: Message) -> bool:
    return bool(indiscreet_words(f"{message.subject or ''}\n{message.body}"))


def format_when(start: dt.datetime, *, with_date: bool = True, with_time: bool = True) -> str:
    """'Tuesday 4 March at 7:30pm' (local wall-clock time)."""
    hour = start.hour % 12 or 12
    clock = f"{hour}{start.strftime(':%M') if start.minute else ''}{'am' if start.hour < 12 else 'pm'}"
    day = f"{start:%A} {start.day} {start:%B}"
    if with_date and with_time:
        return f"{day} at {clock}"
    return day if with_date else clock


def _shown(text: str | None, *, full: bool) -> str | None:
    """Free text from the feed, if it may be shown: always with full detail, else only if discreet."""
    return text if text and (full or not indiscreet_words(text)) else None


def venue_of(meeting: MeetingSnapshot, *, full: bool) -> str | None:
    """The place, in words that give nothing away in discreet mode (or None if online only)."""
    if meeting.attendance_option == "online":
        return None
    if full:
        parts = [c for c in (meeting.location, meeting.formatted_address or meeting.postcode) if c]
        return ", ".join(parts) or None
    candidates = [meeting.location, meeting.formatted_address, meeting.postcode]
    safe = [c for c in candidates if _shown(c, full=False)]
    if not safe:
        return None
    # The safe address beats a bare postcode; a safe venue name goes first.
    if meeting.location in safe and len(safe) > 1 and safe[1] != meeting.location:
        return f"{safe[0]}, {safe[1]}"
    return safe[0]


def venues_of(meeting: MeetingSnapshot, *, full: bool) -> list[str | None]:
    """The place with less and less detail: venue and address, the address alone, the postcode, nothing."""
    shorter = [venue_of(meeting, full=full)]
    if meeting.attendance_option != "online":
        shorter += [_shown(meeting.formatted_address, full=full), _shown(meeting.postcode, full=full)]
    return [v for i, v in enumerate(shorter) if v and v not in shorter[:i]] + [None]


def joining_of(meeting: MeetingSnapshot, *, full: bool = True, url_notes: bool = True,
               phone_notes: bool = True) -> str | None:
    """How to join online or by phone; in discreet mode only the parts that give nothing away."""
    if meeting.attendance_option not in ("online", "hybrid"):
        return None
    parts = []
    if url := _shown(meeting.conference_url, full=full):
        parts.append(url)
        if url_notes and (notes := _shown(meeting.conference_url_notes, full=full)):
            parts.append(notes)
    if phone := _shown(meeting.conference_phone, full=full):
        parts.append(f"{'or call' if parts else 'call'} {phone}")
        if phone_notes and (notes := _shown(meeting.conference_phone_notes, full=full)):
            parts.append(f"({notes})")
    return " ".join(parts) or None


SENDER_NAME = "FAMA reminders"


@lru_cache(maxsize=8)
def _environment(override: str | None) -> Environment:
    folders = [override, str(BUILT_IN_TEMPLATES)] if override else [str(BUILT_IN_TEMPLATES)]
    return Environment(loader=FileSystemLoader(folders), undefined=StrictUndefined, autoescape=False,  # noqa: S701 (plain text)
                       keep_trailing_newline=False, trim_blocks=True)


def _message(*, channel: str, body: str, subject: str) -> Message:
    body = " ".join(body.split())
    if channel == "sms":
        # Enforced here, not in the templates, so a deployment's template cannot drop it.
        if not body.endswith(STOP_LINE):
            body = f"{body} {STOP_LINE}"
        return Message(channel="sms", body=body.translate(_TO_GSM))
    return Message(channel="email", subject=" ".join(subject.split()), body=f"{body}\n\n{EMAIL_FOOTER}")


def _optional_parts(meeting: MeetingSnapshot, *, full: bool) -> Iterator[tuple[str | None, str | None]]:
    """(venue, joining) with less and less in them: joining notes go first, then joining, then venue detail."""
    venues = venues_of(meeting, full=full)
    yield venues[0], joining_of(meeting, full=full)
    yield venues[0], joining_of(meeting, full=full, url_notes=False)  # the link's notes are the long ones
    yield venues[0], joining_of(meeting, full=full, url_notes=False, phone_notes=False)
    for venue in venues:
        yield venue, None


def generic_message(*, kind: str, channel: str, when: str, previous_when: str = "", sender: str = SENDER_NAME) -> Message:
    """The discreet message of a kind that needs nothing from the meeting's own text."""
    body = KINDS[kind].generic_body.format(when=when, previous_when=previous_when, sender=sender)
    subject = KINDS[kind].generic_subject.format(when=when)
    return _message(channel=channel, body=body, subject=subject)


def render(*, kind: str, channel: str, meeting: MeetingSnapshot, start: dt.datetime, detail: str,
           previous_start: dt.datetime | None = None, now: dt.datetime | None = None,
           templates_dir: str | None = None, sender: str = SENDER_NAME) -> Message:
    tz = ZoneInfo(meeting.timezone)
    local = start.astimezone(tz)
    full = detail == "full"
    if KINDS[kind].when == TODAY_OR_DATE_TIME:
        today = (now or dt.datetime.now(dt.UTC)).astimezone(tz).date()
        when = f"today at {format_when(local, with_date=False)}" if local.date() == today else format_when(local)
    elif KINDS[kind].when == DATE:
        when = format_when(local, with_time=False)
    else:
        when = format_when(local)
    previous_when = format_when(previous_start.astimezone(tz)) if previous_start else ""
    context = {
        "kind": kind, "full": full, "when": when, "previous_when": previous_when, "sender": sender,
        "meeting_name": meeting.name if full else "",
        "fellowship_name": ("mutual aid" if meeting.fellowship == "other"  # inside a sentence
                            else FELLOWSHIP_NAMES.get(meeting.fellowship, meeting.fellowship)) if full else "",
    }
    env = _environment(templates_dir)
    for venue, joining in _optional_parts(meeting, full=full):
        parts = {**context, "venue": venue, "joining": joining}
        message = _message(channel=channel, body=env.get_template(f"{kind}.txt").render(parts),
                           subject=env.get_template("email_subject.txt").render(parts) if channel == "email" else "")
        if not full and gives_away(message):
            break  # the last guard: a template or a mix of parts says what no part said alone
        if fits(message):
            return message
    return generic_message(kind=kind, channel=channel, when=when, previous_when=previous_when, sender=sender)
