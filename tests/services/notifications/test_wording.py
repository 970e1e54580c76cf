"""What a client reads: discreet unless they opted in, always how to stop, joining details."""

from __future__ import annotations

import datetime as dt
import re

from services.notifications.wording import render
from shared.events import MeetingSnapshot

# Independent of the service's own list: what must never show on a shared phone.
FORBIDDEN = {"smart", "recovery", "alcohol", "alcoholics", "drink", "drinking", "drug", "drugs", "anonymous", "aa",
             "na", "ca", "narcotics", "cocaine", "addiction", "sober", "fellowship", "croydon smart"}
START = dt.datetime(2026, 3, 29, 18, 30, tzinfo=dt.UTC)  # Sunday 29 March, 19:30 BST
KINDS = ("day_before", "hours_before", "follow_up", "meeting_moved", "meeting_cancelled")


def snapshot(**kw) -> MeetingSnapshot:
    values = {"slug": "s", "name": "SMART Recovery Croydon", "fellowship": "smart", "day": 0, "time": "19:30",
              "location": "Community Recovery Hub", "formatted_address": "12 High Street, Croydon CR0 1AA",
              "postcode": "CR0 1AA"}
    values.update(kw)
    return MeetingSnapshot(**values)


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def message(kind: str, detail: str = "discreet", channel: str = "sms", **kw):
    return render(kind=kind, channel=channel, meeting=snapshot(**kw), start=START, detail=detail,
                  previous_start=START - dt.timedelta(days=1), now=START - dt.timedelta(hours=2))


def test_discreet_messages_give_nothing_away():
    for fellowship, name in (("smart", "SMART Recovery Croydon"), ("aa", "Alcoholics Anonymous Big Book"),
                             ("na", "Narcotics Anonymous Just for Today")):
        for kind in KINDS:
            for channel in ("sms", "email"):
                msg = message(kind, channel=channel, fellowship=fellowship, name=name)
                text = f"{msg.subject or ''} {msg.body}"
                assert words(text) & FORBIDDEN == set(), (kind, text)
                assert "Recovery Hub" not in text


def test_discreet_reminder_says_time_and_place():
    body = message("day_before").body
    assert body == ("Reminder: your meeting is tomorrow, Sunday 29 March at 7:30pm, at 12 High Street, Croydon CR0 1AA. "
                    "Reply STOP to stop these messages")
    assert message("hours_before").body.startswith("Reminder: your meeting starts today at 7:30pm, at 12 High Street")


def test_full_detail_names_the_meeting_when_the_client_opted_in():
    body = message("day_before", detail="full").body
    assert "SMART Recovery Croydon (SMART Recovery)" in body
    assert "Community Recovery Hub, 12 High Street" in body


def test_every_sms_ends_with_how_to_stop():
    for kind in KINDS:
        for detail in ("discreet", "full"):
            assert message(kind, detail).body.endswith("Reply STOP to stop these messages")


def test_online_meeting_includes_joining_details():
    body = message("hours_before", attendance_option="online", conference_url="https://zoom.us/j/123456",
                   conference_url_notes="Passcode 4321", conference_phone="+44 20 3481 5237").body
    assert "To join: https://zoom.us/j/123456 Passcode 4321 or call +44 20 3481 5237." in body
    assert "High Street" not in body
    hybrid = message("day_before", attendance_option="hybrid", conference_url="https://zoom.us/j/9").body
    assert "12 High Street" in hybrid and "https://zoom.us/j/9" in hybrid


def test_moved_and_cancelled_notices():
    # 24 real hours before 19:30 BST is 18:30 GMT: each time is shown on its own day's clock.
    assert "has moved from Saturday 28 March at 6:30pm to Sunday 29 March at 7:30pm" in message("meeting_moved").body
    assert message("meeting_cancelled").body.startswith("Cancelled: your meeting on Sunday 29 March at 7:30pm")


def test_email_has_a_subject_and_no_sms_footer():
    msg = message("day_before", channel="email")
    assert msg.subject == "Reminder: Sunday 29 March at 7:30pm"
    assert "Reply STOP to stop these messages" not in msg.body


def test_a_deployment_can_replace_a_template(tmp_path):
    (tmp_path / "day_before.txt").write_text("See you {{ when }}.")
    msg = render(kind="day_before", channel="sms", meeting=snapshot(), start=START, detail="discreet",
                 templates_dir=str(tmp_path))
    assert msg.body == "See you Sunday 29 March at 7:30pm. Reply STOP to stop these messages"
    other = render(kind="follow_up", channel="sms", meeting=snapshot(), start=START, detail="discreet",
                   templates_dir=str(tmp_path))
    assert other.body.startswith("How did it go on Sunday 29 March?")
