"""When reminders are due: the meeting's own clock across BST/GMT, quiet hours, caps."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import text

from services.notifications.config import Settings
from services.notifications.handlers import HANDLERS
from services.notifications.models import ReferralContact
from services.notifications.runtime import runtime
from services.notifications.service import plan_reminders, plan_times
from shared.events import MeetingSnapshot
from tests.services.notifications.support import (
    MOBILE,
    by_kind,
    handle,
    meeting,
    meeting_event,
    outbox_events,
    referral_event,
    reminders,
)
from tests.support.events import signed

UTC = dt.UTC


def weekly(day: int, time: str) -> MeetingSnapshot:
    return MeetingSnapshot(slug="m", name="Monday Big Book", fellowship="aa", day=day, time=time)


def at(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def test_plan_for_a_meeting_on_the_day_the_clocks_go_forward():
    # Sunday 29 March 2026: clocks go forward at 01:00 GMT. The meeting is at 19:30 BST.
    times = plan_times(meeting=weekly(0, "19:30"), planned_date=dt.date(2026, 3, 29), now=at(2026, 3, 20), cfg=Settings())
    assert times == {
        "day_before": at(2026, 3, 28, 18, 0),  # Saturday 18:00 GMT
        "hours_before": at(2026, 3, 29, 16, 30),  # 17:30 BST
        "follow_up": at(2026, 3, 30, 9, 0),  # Monday 10:00 BST
    }


def test_plan_for_the_day_after_the_clocks_go_forward():
    times = plan_times(meeting=weekly(1, "10:30"), planned_date=dt.date(2026, 3, 30), now=at(2026, 3, 20), cfg=Settings())
    assert times["day_before"] == at(2026, 3, 29, 17, 0)  # Sunday 18:00 BST, no longer GMT
    assert times["hours_before"] == at(2026, 3, 30, 7, 30)  # 08:30 BST


def test_plan_across_the_clocks_going_back():
    # Sunday 25 October 2026: clocks go back at 02:00 BST. Saturday is still BST.
    times = plan_times(meeting=weekly(0, "11:00"), planned_date=dt.date(2026, 10, 25), now=at(2026, 10, 1), cfg=Settings())
    assert times == {
        "day_before": at(2026, 10, 24, 17, 0),  # 18:00 BST
        "hours_before": at(2026, 10, 25, 9, 0),  # 09:00 GMT
        "follow_up": at(2026, 10, 26, 10, 0),  # 10:00 GMT
    }


def test_hours_before_is_real_time_across_the_change():
    # No quiet hours: a 03:30 BST meeting two real hours earlier is 00:30 GMT on the wall clock.
    cfg = Settings(quiet_start="00:00", quiet_end="00:00")
    times = plan_times(meeting=weekly(0, "03:30"), planned_date=dt.date(2026, 3, 29), now=at(2026, 3, 20), cfg=cfg)
    assert times["hours_before"] == at(2026, 3, 29, 0, 30)


def test_reminder_in_quiet_hours_moves_to_the_evening_before():
    # Tuesday 08:30 meeting: 06:30 is in quiet hours, so the reminder moves to Monday 20:30.
    # It is planned on Monday at 19:00, after the 18:00 day-before reminder time.
    times = plan_times(meeting=weekly(2, "08:30"), planned_date=dt.date(2026, 6, 16), now=at(2026, 6, 15, 18, 0),
                       cfg=Settings())
    assert times == {"hours_before": at(2026, 6, 15, 19, 30), "follow_up": at(2026, 6, 17, 9, 0)}  # 20:30 / 10:00 BST


def test_early_meeting_gets_one_evening_reminder_not_two():
    times = plan_times(meeting=weekly(2, "08:30"), planned_date=dt.date(2026, 6, 16), now=at(2026, 6, 1), cfg=Settings())
    assert set(times) == {"day_before", "follow_up"}
    assert times["day_before"] == at(2026, 6, 15, 17, 0)


def test_moved_reminder_already_in_the_past_is_skipped():
    # Planned at 20:45 BST on Monday: the 20:30 slot has passed, so no reminder before the meeting.
    times = plan_times(meeting=weekly(2, "08:30"), planned_date=dt.date(2026, 6, 16), now=at(2026, 6, 15, 19, 45),
                       cfg=Settings())
    assert set(times) == {"follow_up"}


def test_configured_times_inside_quiet_hours_move():
    cfg = Settings(day_before_time="22:30", follow_up_time="06:00")
    times = plan_times(meeting=weekly(2, "19:00"), planned_date=dt.date(2026, 1, 13), now=at(2026, 1, 1), cfg=cfg)
    assert times["day_before"] == at(2026, 1, 12, 20, 30)  # moved earlier, GMT
    assert times["follow_up"] == at(2026, 1, 14, 8, 0)  # moved later to the end of quiet hours
    assert times["hours_before"] == at(2026, 1, 13, 17, 0)


def test_nothing_in_the_past():
    times = plan_times(meeting=weekly(2, "19:00"), planned_date=dt.date(2026, 1, 13), now=at(2026, 1, 13, 18, 0),
                       cfg=Settings())
    assert set(times) == {"follow_up"}


def test_custom_hours_before():
    cfg = Settings(hours_before=4)
    times = plan_times(meeting=weekly(2, "19:00"), planned_date=dt.date(2026, 1, 13), now=at(2026, 1, 1), cfg=cfg)
    assert times["hours_before"] == at(2026, 1, 13, 15, 0)


@pytest.mark.usefixtures("clean_state")
class TestReferralCreated:
    def test_plans_three_reminders_with_the_contact_encrypted(self):
        m = meeting()
        handle(meeting_event(m))
        event = referral_event(m)
        assert handle(event) is True
        rid = event.payload["referral_id"]
        planned = by_kind(rid)
        assert set(planned) == {"confirmation", "day_before", "hours_before", "follow_up"}
        assert all(r.channel == "sms" and r.status == "created" for r in planned.values())
        assert planned["confirmation"].due_at < planned["day_before"].due_at < planned["hours_before"].due_at \
            < planned["follow_up"].due_at
        assert len(outbox_events("reminder.scheduled")) == 4
        with runtime.sessions() as session:
            raw = session.execute(text("SELECT contact FROM referral_contacts")).scalar_one()
            assert MOBILE not in raw and "7700900123" not in raw
            assert session.get(ReferralContact, event.parsed().referral_id).contact == MOBILE

    def test_the_same_referral_twice_plans_once(self):
        m = meeting()
        handle(meeting_event(m))
        event = referral_event(m)
        handle(event)
        assert handle(event) is False  # the same event redelivered
        again = referral_event(m, referral_id=event.parsed().referral_id)  # the same fact, a new event
        assert handle(again) is True
        assert len(reminders()) == 4  # three reminders and the confirmation
        assert len(outbox_events("reminder.scheduled")) == 4

    def test_no_consent_or_no_contact_plans_nothing(self):
        m = meeting()
        handle(meeting_event(m))
        handle(referral_event(m, consent=False))
        handle(referral_event(m, mobile=None))
        assert reminders() == []

    def test_email_only_contact_gets_email_reminders(self):
        m = meeting()
        handle(meeting_event(m))
        event = referral_event(m, mobile=None, email="client@example.org")
        handle(event)
        assert {r.channel for r in reminders()} == {"email"}

    def test_referral_before_its_meeting_is_planned_when_the_meeting_arrives(self):
        m = meeting()
        event = referral_event(m)
        handle(event)
        assert reminders() == []
        handle(meeting_event(m))
        assert set(by_kind(event.parsed().referral_id)) == {"confirmation", "day_before", "hours_before", "follow_up"}

    def test_daily_cap_per_contact(self, monkeypatch):
        monkeypatch.setattr(runtime.settings, "daily_cap", 1)
        evening = meeting("evening")
        morning = meeting("morning", time="11:00")
        handle(meeting_event(evening))
        handle(meeting_event(morning))
        first = referral_event(evening)
        second = referral_event(morning)  # same number, same day
        handle(first)
        handle(second)
        assert set(by_kind(first.parsed().referral_id)) == {"confirmation", "day_before", "hours_before", "follow_up"}
        assert set(by_kind(second.parsed().referral_id)) == {"confirmation"}  # not a reminder: never capped
        # A different number is not capped.
        third = referral_event(morning, mobile="07700 900456")
        handle(third)
        assert set(by_kind(third.parsed().referral_id)) == {"confirmation", "day_before", "hours_before", "follow_up"}

    @pytest.fixture
    def follow_up_same_day(self, monkeypatch):
        """An 11:00 meeting whose follow-up is at 15:00 the same day: its reminder two hours before
        and its follow-up fall on one local day, the day-before reminder on the day before."""
        monkeypatch.setattr(runtime.settings, "follow_up_days", 0)
        monkeypatch.setattr(runtime.settings, "follow_up_time", "15:00")
        return meeting("morning", time="11:00")

    def test_daily_cap_counts_what_the_same_plan_adds(self, monkeypatch, follow_up_same_day):
        monkeypatch.setattr(runtime.settings, "daily_cap", 1)
        handle(meeting_event(follow_up_same_day))
        first = referral_event(follow_up_same_day)
        handle(first)
        # The follow-up is the lower priority, and the reminder before the meeting already has that day.
        assert set(by_kind(first.parsed().referral_id)) == {"confirmation", "hours_before", "day_before"}
        second = referral_event(follow_up_same_day)  # same number, same meeting day
        handle(second)
        assert set(by_kind(second.parsed().referral_id)) == {"confirmation"}
        assert len(outbox_events("reminder.scheduled")) == 4

    def test_daily_cap_across_referrals_of_one_contact_on_the_same_day(self, monkeypatch, follow_up_same_day):
        monkeypatch.setattr(runtime.settings, "daily_cap", 2)
        handle(meeting_event(follow_up_same_day))
        first, second, third = (referral_event(follow_up_same_day) for _ in range(3))
        handle(first)
        handle(second)
        handle(third)
        assert set(by_kind(first.parsed().referral_id)) == {"confirmation", "hours_before", "day_before", "follow_up"}
        # The meeting day has two already; the day before has one.
        assert set(by_kind(second.parsed().referral_id)) == {"confirmation", "day_before"}
        assert set(by_kind(third.parsed().referral_id)) == {"confirmation"}
        # Each planned reminder told referrals once; the skipped ones, never.
        assert len(outbox_events("reminder.scheduled")) == 4 + 2 + 1

    def test_daily_cap_across_referrals_arriving_in_one_batch(self, monkeypatch, follow_up_same_day):
        # A worker's batch message: both referrals planned in one transaction, the second seeing the first.
        monkeypatch.setattr(runtime.settings, "daily_cap", 2)
        handle(meeting_event(follow_up_same_day))
        first, second = referral_event(follow_up_same_day), referral_event(follow_up_same_day)
        assert runtime.handle_batch([signed(first), signed(second)], HANDLERS) == 2
        assert set(by_kind(first.parsed().referral_id)) == {"confirmation", "hours_before", "day_before", "follow_up"}
        assert set(by_kind(second.parsed().referral_id)) == {"confirmation", "day_before"}

    def test_planning_a_planned_referral_again_changes_nothing(self):
        # As START or a reopened date plan again: what stands is kept, no second event.
        m = meeting()
        handle(meeting_event(m))
        event = referral_event(m)
        handle(event)
        before = {(r.id, r.kind, r.due_at, r.status) for r in reminders()}
        with runtime.transaction() as session:
            contact = session.get(ReferralContact, event.parsed().referral_id)
            assert plan_reminders(session, contact=contact, meeting=m) == []
        assert {(r.id, r.kind, r.due_at, r.status) for r in reminders()} == before
        assert len(outbox_events("reminder.scheduled")) == 4


@pytest.mark.usefixtures("clean_state")
class TestReferralEnds:
    def _planned(self):
        m = meeting()
        handle(meeting_event(m))
        event = referral_event(m)
        handle(event)
        return m, event.parsed()

    def _status(self, referral, to_status: str):
        from shared.events import Event, ReferralStatusChanged

        return Event.new("referral.status_changed", ReferralStatusChanged(
            referral_id=referral.referral_id, site_id="croydon", meeting_slug=referral.meeting_slug,
            fellowship="smart", from_status="requested", to_status=to_status, reason="client declined"),
            producer="referrals")

    def test_ended_referral_cancels_pending_reminders_and_erases_the_contact(self):
        _m, referral = self._planned()
        handle(self._status(referral, "in-progress"))
        assert len(by_kind(referral.referral_id)) == 4  # with the confirmation
        handle(self._status(referral, "cancelled"))
        assert {r.status for r in reminders()} == {"cancelled"}
        assert {p["reason"] for p in outbox_events("reminder.cancelled")} == {"referral cancelled"}
        assert len(outbox_events("reminder.cancelled")) == 4
        with runtime.sessions() as session:
            assert session.get(ReferralContact, referral.referral_id).contact is None
        # The same ending as another event changes nothing more.
        handle(self._status(referral, "cancelled"))
        assert len(outbox_events("reminder.cancelled")) == 4

    def test_consent_withdrawn_cancels(self):
        from shared.events import Event, ReferralConsentWithdrawn

        _m, referral = self._planned()
        handle(Event.new("referral.consent_withdrawn", ReferralConsentWithdrawn(
            referral_id=referral.referral_id, site_id="croydon", fellowship="smart"), producer="referrals"))
        assert {r.status for r in reminders()} == {"cancelled"}

    def test_ending_that_arrives_before_the_referral_wins(self):
        m = meeting()
        handle(meeting_event(m))
        created = referral_event(m)
        handle(self._status(created.parsed(), "entered-in-error"))
        handle(created)
        assert reminders() == []
