"""The planned session's calendar file, read back with icalendar: what a client's phone would show."""

from __future__ import annotations

import datetime as dt
import re
import uuid
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from icalendar import Calendar

from services.referrals.ics import planned_session_calendar
from shared.events import FELLOWSHIP_NAMES, MeetingSnapshot
from tests.services.notifications.test_wording import (
    CLEAN,
    GIVEAWAY_CASES,
    URL,
    still_says,
    variant,
)

# Independent of shared/discretion.py's lists (so are the notifications tests' spellings imported above):
# what must never show on a shared phone or calendar.
FORBIDDEN = ("smart", "recovery", "alcohol", "alcoholics", "drink", "drug", "anonymous", "aa", "na", "narcotics",
             "addiction", "sober", "fellowship", "12 step", "croydon-smart")
NOW = dt.datetime(2027, 3, 1, 9, 0, tzinfo=dt.UTC)
REFERRAL = uuid.UUID("8c7f2a51-0d5e-4b7e-a9f1-3f0c2e6d1b22")
MEETING = {"slug": "croydon-smart-tuesday", "name": "SMART Recovery Croydon", "fellowship": "smart", "day": 2,
           "time": "14:00", "end_time": "15:30", "timezone": "Europe/London", "location": "Ruskin House",
           "formatted_address": "23 Coombe Road, Croydon CR0 1BD", "postcode": "CR0 1BD",
           "latitude": 51.3713, "longitude": -0.0955, "site_id": "croydon"}


def calendar(planned=dt.date(2027, 3, 30), detail="discreet", referral_id=REFERRAL, **meeting) -> Calendar:
    body = planned_session_calendar(referral_id=referral_id, planned_date=planned,
                                    meeting=MeetingSnapshot(**{**MEETING, **meeting}), detail=detail, now=NOW,
                                    directory_url="https://find.example.org")
    return Calendar.from_ical(body)


def event_of(cal: Calendar):
    events = cal.walk("VEVENT")
    assert len(events) == 1
    return events[0]


def words_shown(cal: Calendar) -> str:
    """Every text a calendar app could show: summary, place, notes, link and the alarm's text."""
    event = event_of(cal)
    texts = [str(event.get(name, "")) for name in ("summary", "location", "description", "url")]
    texts += [str(alarm.get("description", "")) for alarm in event.walk("VALARM")]
    return "\n".join(texts).lower()


def forbidden_in(text: str) -> list[str]:
    return [w for w in FORBIDDEN if re.search(rf"(?<![a-z0-9]){re.escape(w)}(?![a-z0-9])", text)]


def test_discreet_entry_has_the_time_place_and_an_alarm_and_no_fellowship_words():
    cal = calendar()
    event = event_of(cal)
    assert str(event["summary"]) == "Your meeting"
    assert str(event["location"]) == "Ruskin House, 23 Coombe Road, Croydon CR0 1BD"
    assert forbidden_in(words_shown(cal)) == []
    assert "url" not in event  # the directory's page address names the meeting
    assert str(event["class"]) == "PRIVATE"
    assert (event["geo"].latitude, event["geo"].longitude) == (51.3713, -0.0955)
    alarms = event.walk("VALARM")
    assert len(alarms) == 1 and str(alarms[0]["action"]) == "DISPLAY"
    assert alarms[0]["trigger"].dt == -dt.timedelta(hours=1)
    assert event["dtend"].dt - event["dtstart"].dt == dt.timedelta(minutes=90)


def test_dtstart_is_london_wall_clock_time_either_side_of_the_clock_change():
    # 28 March 2027 the clocks go forward: 14:00 is 14:00 GMT the Tuesday before, 13:00 UTC after.
    before, after = calendar(planned=dt.date(2027, 3, 23)), calendar(planned=dt.date(2027, 3, 30))
    for cal, utc_hour in ((before, 14), (after, 13)):
        start = event_of(cal)["dtstart"]
        assert start.params["TZID"] == "Europe/London"
        assert start.dt.replace(tzinfo=None) == dt.datetime.combine(start.dt.date(), dt.time(14, 0))
        assert start.dt.astimezone(dt.UTC).hour == utc_hour
        assert start.dt.utcoffset() == ZoneInfo("Europe/London").utcoffset(start.dt.replace(tzinfo=None))
    # The file carries its own timezone, with both GMT and BST, for apps without the tz database.
    zones = before.walk("VTIMEZONE")
    assert [str(z["tzid"]) for z in zones] == ["Europe/London"]
    names = {str(sub["tzname"]) for sub in zones[0].subcomponents}
    assert {"GMT", "BST"} <= names
    # And back in October: 31 October 2027.
    autumn = event_of(calendar(planned=dt.date(2027, 11, 2)))["dtstart"].dt
    assert autumn.astimezone(dt.UTC).hour == 14 and autumn.hour == 14


def test_uid_is_stable_per_referral_and_shows_no_referral_id():
    first, again = event_of(calendar()), event_of(calendar(planned=dt.date(2027, 4, 6)))
    assert str(first["uid"]) == str(again["uid"])  # a new plan replaces the entry, not a second one
    other = event_of(calendar(referral_id=uuid.uuid4()))
    assert str(other["uid"]) != str(first["uid"])
    assert str(REFERRAL) not in str(first["uid"]) and REFERRAL.hex not in str(first["uid"])


def test_feed_text_that_gives_the_meeting_away_is_left_out_when_discreet():
    cal = calendar(location="AA Hall (Step House)", formatted_address="AA Hall, 5 Recovery Lane, Croydon CR0 2AA",
                   postcode="CR0 2AA")
    assert str(event_of(cal)["location"]) == "Croydon CR0 2AA"  # the address, less its telling parts
    assert forbidden_in(words_shown(cal)) == []
    only_postcode = event_of(calendar(location="Sober Space", formatted_address="Sober Space, 1 Rehab Row",
                                      postcode="CR0 2AB"))
    assert str(only_postcode["location"]) == "CR0 2AB"
    nothing_safe = event_of(calendar(location="Sober Café", formatted_address="Narcotics Anonymous Hall",
                                     postcode=None))
    assert "location" not in nothing_safe and "geo" not in nothing_safe
    assert str(nothing_safe["summary"]) == "Your meeting"


def test_online_session_gives_the_joining_link_and_drops_a_telling_note():
    cal = calendar(attendance_option="online", location=None, formatted_address=None, postcode=None,
                   conference_url="https://zoom.us/j/81234567890", conference_url_notes="SMART password: sober",
                   conference_phone="020 3481 5237", conference_phone_notes="Meeting ID 812 3456 7890")
    event = event_of(cal)
    assert str(event["location"]) == "https://zoom.us/j/81234567890"
    description = str(event["description"])
    assert "Join online: https://zoom.us/j/81234567890" in description
    assert "By phone: 020 3481 5237 (Meeting ID 812 3456 7890)" in description
    assert "password" not in description and forbidden_in(words_shown(cal)) == []
    assert "geo" not in event


def test_hybrid_session_has_the_place_and_the_joining_link():
    event = event_of(calendar(attendance_option="hybrid", conference_url="https://meet.example.org/tuesday"))
    assert str(event["location"]) == "Ruskin House, 23 Coombe Road, Croydon CR0 1BD"
    assert "Join online: https://meet.example.org/tuesday" in str(event["description"])


def test_parts_safe_alone_but_telling_together_leave_only_the_time():
    # "A" then "A": each part passes, together they spell the fellowship's abbreviation.
    event = event_of(calendar(attendance_option="hybrid", location="Block A", formatted_address=None, postcode=None,
                              conference_url="https://meet.example.org/a", conference_url_notes="A"))
    assert "location" not in event and "description" not in event
    assert str(event["summary"]) == "Your meeting" and event["dtstart"].dt.hour == 14


def test_full_detail_names_the_meeting_when_the_client_chose_it():
    cal = calendar(detail="full", location="AA Hall")
    event = event_of(cal)
    assert str(event["summary"]) == "SMART Recovery Croydon"
    assert "SMART Recovery Croydon (SMART Recovery)" in str(event["description"])
    assert str(event["url"]) == "https://find.example.org/meeting/croydon-smart-tuesday"
    assert str(event["location"]).startswith("AA Hall, ")
    assert "class" not in event


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), **GIVEAWAY_CASES)
def test_no_spelling_of_a_fellowship_or_recovery_word_reaches_a_discreet_calendar_entry(
        data, word, field, attendance, fellowship, before, after, around):
    text = f"{before}{around[0]}{data.draw(variant(word))}{around[1]}{after}"
    cal = calendar(**{**CLEAN, "slug": "s", "fellowship": fellowship, "attendance_option": attendance, field: text})
    shown = words_shown(cal)
    assert not still_says(shown, word), (field, text, shown)
    assert not still_says(shown, FELLOWSHIP_NAMES[fellowship]), shown
    event = event_of(cal)
    assert event["dtstart"].dt.hour == 14 and str(event["summary"]) == "Your meeting"
    if attendance != "in_person" and field not in ("conference_url", "name"):
        assert URL in shown.replace(URL.lower(), URL)  # the joining link survives the one part that had to go


def test_a_session_changed_that_day_starts_at_its_own_time_with_its_note():
    from shared.events import MeetingException

    changed = MeetingException(date=dt.date(2027, 3, 30), closed=False, time="15:00", end_time="16:00",
                               note="In the back room this week")
    event = event_of(calendar(exceptions=[changed]))
    assert event["dtstart"].dt.hour == 15 and event["dtend"].dt.hour == 16
    assert "This week: In the back room this week" in str(event["description"])
    telling = MeetingException(date=dt.date(2027, 3, 30), closed=False, time="15:00", note="AA convention upstairs")
    event = event_of(calendar(exceptions=[telling]))
    assert event["dtstart"].dt.hour == 15 and "convention" not in words_shown(calendar(exceptions=[telling]))
