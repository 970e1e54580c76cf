"""A meeting moved or withdrawn: pending reminders follow, the client is told once."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from shared.db import aware
from shared.events import MeetingException, utcnow
from shared.meeting_time import RFC_DAYS
from tests.services.notifications.support import (
    by_kind,
    handle,
    meeting,
    meeting_event,
    outbox_events,
    planned_date,
    referral_event,
    reminders,
)

pytestmark = pytest.mark.usefixtures("clean_state")


def planned():
    m = meeting()
    handle(meeting_event(m, at=utcnow() - dt.timedelta(minutes=5)))
    event = referral_event(m)
    handle(event)
    return m, event.parsed()


def test_meeting_moved_moves_pending_reminders_and_tells_the_client_once():
    m, referral = planned()
    before = by_kind(referral.referral_id)
    moved = m.model_copy(update={"time": "18:00"})
    handle(meeting_event(moved, "meeting.updated"))
    after = by_kind(referral.referral_id)
    assert set(after) == {"confirmation", "day_before", "hours_before", "follow_up", "meeting_moved"}
    # 90 minutes earlier: the "hours before" reminder moves with it; the evening-before one stays at 18:00.
    assert aware(after["hours_before"].due_at) == aware(before["hours_before"].due_at) - dt.timedelta(minutes=90)
    assert after["hours_before"].id != before["hours_before"].id
    notice = after["meeting_moved"]
    assert aware(notice.meeting_start) == aware(before["hours_before"].meeting_start) - dt.timedelta(minutes=90)
    assert aware(notice.previous_start) == aware(before["hours_before"].meeting_start)
    assert aware(notice.due_at) <= utcnow() + dt.timedelta(hours=12)
    old = [r for r in reminders(referral.referral_id) if r.id in {b.id for b in before.values()}]
    assert {r.status for r in old} == {"cancelled"} and {r.reason for r in old} == {"meeting moved"}

    # The same change again as a new event, and an older event arriving late, change nothing.
    handle(meeting_event(moved, "meeting.updated"))
    handle(meeting_event(m, "meeting.updated", at=utcnow() - dt.timedelta(minutes=1)))
    assert len([r for r in reminders() if r.kind == "meeting_moved"]) == 1
    assert by_kind(referral.referral_id).keys() == after.keys()
    # Each plan: three reminders and the confirmation (not sent yet, so it moves too); one notice.
    assert len(outbox_events("reminder.scheduled")) == 4 + 4 + 1


def test_meeting_moved_to_another_day_moves_the_planned_date():
    m, referral = planned()
    before = by_kind(referral.referral_id)
    handle(meeting_event(m.model_copy(update={"day": (m.day + 1) % 7}), "meeting.updated"))
    after = by_kind(referral.referral_id)
    assert aware(after["follow_up"].due_at) - aware(before["follow_up"].due_at) == dt.timedelta(days=1)
    assert aware(after["meeting_moved"].meeting_start) - aware(before["day_before"].meeting_start) == dt.timedelta(days=1)


def test_venue_change_alone_sends_no_notice():
    m, referral = planned()
    handle(meeting_event(m.model_copy(update={"formatted_address": "3 New Road, Croydon"}), "meeting.updated"))
    assert set(by_kind(referral.referral_id)) == {"confirmation", "day_before", "hours_before", "follow_up"}


def test_meeting_withdrawn_cancels_and_tells_the_client_once():
    m, referral = planned()
    handle(meeting_event(m, "meeting.withdrawn"))
    rows = reminders(referral.referral_id)
    assert {r.kind: r.status for r in rows} == {"day_before": "cancelled", "hours_before": "cancelled",
                                                "follow_up": "cancelled", "confirmation": "cancelled",
                                                "meeting_cancelled": "created"}
    handle(meeting_event(m, "meeting.withdrawn"))  # withdrawn again, as another event
    assert len(reminders(referral.referral_id)) == 5
    assert {p["kind"] for p in outbox_events("reminder.cancelled")} == {"day_before", "hours_before", "follow_up",
                                                                        "confirmation"}


def test_withdrawn_meeting_notice_is_cancelled_by_stop():
    from services.notifications.runtime import runtime
    from services.notifications.service import contact_hash, opt_out

    m, referral = planned()
    handle(meeting_event(m, "meeting.withdrawn"))
    with runtime.transaction() as session:
        opt_out(session, hash_=contact_hash("07700900123", "sms"), channel="sms")
    assert {r.status for r in reminders()} == {"cancelled"}


# --- dated closures and changes of one occurrence ---------------------------------------------

def _closed(m, date, note="Christmas"):
    return m.model_copy(update={"exceptions": [MeetingException(date=date, closed=True, note=note)]})


def test_closing_the_planned_date_cancels_its_reminders_and_tells_the_client_once():
    m, referral = planned()
    closed = _closed(m, referral.planned_date)
    handle(meeting_event(closed, "meeting.updated"))
    rows = reminders(referral.referral_id)
    assert {r.kind: r.status for r in rows} == {"day_before": "cancelled", "hours_before": "cancelled",
                                                "follow_up": "cancelled", "confirmation": "cancelled",
                                                "meeting_cancelled": "created"}
    assert {r.reason for r in rows if r.status == "cancelled"} == {"meeting closed that day"}
    # Redelivered as another event, or a later change to another date: told once, nothing planned again.
    handle(meeting_event(closed, "meeting.updated"))
    other = closed.model_copy(update={"exceptions": [*closed.exceptions, MeetingException(
        date=referral.planned_date + dt.timedelta(days=7), closed=True)]})
    handle(meeting_event(other, "meeting.updated"))
    assert [r.kind for r in reminders(referral.referral_id) if r.status != "cancelled"] == ["meeting_cancelled"]


def test_closing_another_date_changes_nothing_and_reopening_the_planned_date_plans_again():
    m, referral = planned()
    before = by_kind(referral.referral_id)
    handle(meeting_event(_closed(m, referral.planned_date + dt.timedelta(days=7)), "meeting.updated"))
    assert {k: r.id for k, r in by_kind(referral.referral_id).items()} == {k: r.id for k, r in before.items()}
    handle(meeting_event(_closed(m, referral.planned_date), "meeting.updated"))
    handle(meeting_event(m.model_copy(update={"exceptions": []}), "meeting.updated"))
    again = by_kind(referral.referral_id)
    assert {"day_before", "hours_before", "follow_up"} <= set(again)
    assert aware(again["hours_before"].due_at) == aware(before["hours_before"].due_at)


def test_a_changed_time_on_the_planned_date_moves_its_reminders():
    m, referral = planned()
    before = by_kind(referral.referral_id)
    earlier = m.model_copy(update={"exceptions": [MeetingException(date=referral.planned_date, closed=False,
                                                                   time="17:30", note="early this week")]})
    handle(meeting_event(earlier, "meeting.updated"))
    after = by_kind(referral.referral_id)
    assert aware(after["hours_before"].due_at) == aware(before["hours_before"].due_at) - dt.timedelta(hours=2)
    assert aware(after["meeting_moved"].previous_start) == aware(before["hours_before"].meeting_start)


def test_a_referral_planned_on_a_closed_date_gets_no_reminders():
    m = _closed(meeting(), planned_date(meeting()))
    handle(meeting_event(m))
    event = referral_event(m)
    handle(event)
    assert reminders(event.parsed().referral_id) == []


def test_a_fortnightly_meeting_plans_its_own_week():
    m = meeting()
    first = planned_date(m)
    fortnightly = m.model_copy(update={"rrule": f"FREQ=WEEKLY;INTERVAL=2;BYDAY={RFC_DAYS[m.day]}", "dtstart": first})
    handle(meeting_event(fortnightly))
    event = referral_event(fortnightly, on=first)
    handle(event)
    start = by_kind(event.parsed().referral_id)["hours_before"].meeting_start
    assert aware(start).astimezone(ZoneInfo("Europe/London")).date() == first
