"""The clock checked again at send time (docs/REMINDER-TIMING.md, one test per situation), through
the real dispatcher and sender over Redis and Postgres.

Time moves as in the chaos suite, by editing the database, never the code's clock: due times
and meeting occurrences are moved on the reminder rows, and the meeting's wall clock is moved by
giving its replica snapshot a fixed-offset zone where it is now 03:xx (night), 12:xx or 20:xx.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text, update

from services.notifications import sending
from services.notifications.api import app
from services.notifications.models import Reminder, meeting_replica
from services.notifications.runtime import runtime
from shared import queues
from shared.db import aware
from shared.events import utcnow
from tests.services.notifications.notify_server import API_KEY, NotifyServer
from tests.services.notifications.support import (
    by_kind,
    dev_messages,
    handle,
    meeting,
    meeting_event,
    outbox_events,
    referral_event,
    reminder,
    reminders,
)
from tests.support.events import signed
from tests.support.processes import wait_for

pytestmark = pytest.mark.usefixtures("clean_state")
FAST = {"NOTIFICATIONS_DISPATCH_SECONDS": "0.3", "NOTIFICATIONS_SWEEP_SECONDS": "1"}
HOUR = dt.timedelta(hours=1)


def zone_where_it_is(hour: int) -> str:
    """A fixed-offset zone whose wall clock now reads ``hour``:MM (MM as in UTC)."""
    offset = (utcnow().hour - hour) % 24
    if offset > 12:
        offset -= 24
    return "Etc/GMT" if offset == 0 else f"Etc/GMT{offset:+d}"  # Etc/GMT+5 is UTC-5


def local_today(zone: str, hhmm: str) -> dt.datetime:
    hours, minutes = map(int, hhmm.split(":"))
    return dt.datetime.combine(utcnow().astimezone(ZoneInfo(zone)).date(), dt.time(hours, minutes),
                               ZoneInfo(zone)).astimezone(dt.UTC)


def referrals_to(m, count: int) -> list[uuid.UUID]:
    """``count`` referrals to the meeting, each with its own mobile (the hourly cap is per number)."""
    handle(meeting_event(m, at=utcnow() - dt.timedelta(minutes=5)))
    out = []
    for i in range(count):
        event = referral_event(m, mobile=f"+447700{200000 + i:06d}")
        handle(event)
        out.append(event.parsed().referral_id)
    return out


def occurrence(referral_id: uuid.UUID, kind: str, *, start: dt.datetime, end: dt.datetime | None = None,
               due: dt.datetime | None = None) -> uuid.UUID:
    """Move the referral's reminder of ``kind`` to another occurrence and due time (the time machine)."""
    reminder_id = by_kind(referral_id)[kind].id
    with runtime.transaction() as session:
        session.execute(update(Reminder).where(Reminder.id == reminder_id).values(
            meeting_start=start, meeting_end=end or start + dt.timedelta(minutes=90),
            due_at=due or utcnow() - dt.timedelta(minutes=1)))
    return reminder_id


def shift_occurrences(ids, by: dt.timedelta) -> None:
    with runtime.transaction() as session:
        session.execute(text("UPDATE reminders SET meeting_start = meeting_start + make_interval(secs => :s), "
                             "meeting_end = meeting_end + make_interval(secs => :s) WHERE id = ANY(:ids)"),
                        {"s": by.total_seconds(), "ids": list(ids)})


def move_clock(slug: str, zone: str) -> None:
    """The meeting's wall clock now reads another hour (its replica snapshot gets another zone)."""
    with runtime.transaction() as session:
        snapshot = session.scalar(select(meeting_replica.c.snapshot).where(meeting_replica.c.slug == slug))
        session.execute(update(meeting_replica).where(meeting_replica.c.slug == slug)
                        .values(snapshot={**snapshot, "timezone": zone}))
    time.sleep(sending.MEETING_CACHE_SECONDS + 0.5)  # the sender keeps a meeting that long


def make_due_now(ids) -> None:
    with runtime.transaction() as session:
        session.execute(update(Reminder).where(Reminder.id.in_(list(ids))).values(due_at=utcnow()))


def settled(ids) -> dict[uuid.UUID, Reminder] | None:
    """Every reminder sent, ended, or held for later (created, due in the future)."""
    rows = {r.id: r for r in reminders() if r.id in set(ids)}
    later = utcnow() + dt.timedelta(seconds=1)
    for r in rows.values():
        if r.status in ("queued", "sending") or (r.status == "created" and aware(r.due_at) <= later):
            return None
    return rows


def sender(processes, env: dict | None = None):
    processes.scheduler("notifications", env={**FAST, **(env or {})})
    processes.worker("notifications", [queues.NOTIFICATIONS_SEND], env={**FAST, **(env or {})})


def metrics() -> str:
    return TestClient(app).get("/metrics").text


def test_overnight_outage_holds_until_morning_ends_what_is_too_late_and_sends_each_once(processes):
    night = zone_where_it_is(3)
    m = meeting("night-meeting", timezone=night)
    ids = referrals_to(m, 6)
    now, evening = utcnow(), utcnow() - 8 * HOUR  # all were due last evening; the workers were down
    eight = local_today(night, "08:00")
    started = occurrence(ids[0], "day_before", start=now - HOUR, due=evening)
    within_margin = occurrence(ids[1], "hours_before", start=now + dt.timedelta(minutes=20), due=evening)
    held = occurrence(ids[2], "day_before", start=local_today(night, "10:00"), due=evening)
    pointless = occurrence(ids[3], "hours_before", start=eight + dt.timedelta(minutes=15), due=evening)
    follow_up = occurrence(ids[4], "follow_up", start=now - 7 * HOUR, end=now - 6 * HOUR, due=evening)
    not_over = occurrence(ids[5], "follow_up", start=now - HOUR / 2, end=now + HOUR, due=evening)
    every = [started, within_margin, held, pointless, follow_up, not_over]

    sender(processes)  # the workers come back at 03:xx in the meeting's time
    rows = wait_for(lambda: settled(every), timeout=40, what="the overdue reminders handled")
    assert (rows[started].status, rows[started].reason) == ("too-late", "too late: the meeting had started")
    assert (rows[within_margin].status, rows[within_margin].reason) == (
        "too-late", "too late: less than 30 minutes before the meeting")
    assert (rows[pointless].status, rows[pointless].reason) == (
        "too-late", "too late: quiet hours end too close to the meeting")
    assert (rows[held].status, rows[held].reason, aware(rows[held].due_at)) == ("created", "held: quiet hours", eight)
    assert (rows[follow_up].status, rows[follow_up].reason, aware(rows[follow_up].due_at)) == (
        "created", "held: quiet hours", eight)
    assert (rows[not_over].status, rows[not_over].reason, aware(rows[not_over].due_at)) == (
        "created", "held: the meeting has not ended", aware(rows[not_over].meeting_end))
    assert all(r.attempts == 0 for r in rows.values() if r.status == "created")  # waiting is not an attempt
    assert dev_messages() == []
    # Each with its event: the referral's page and the counters hear of it.
    failed = {p["reminder_id"]: p["reason"] for p in outbox_events("reminder.failed")}
    assert failed == {str(i): rows[i].reason for i in (started, within_margin, pointless)}
    rescheduled = {p["reminder_id"]: (p["reason"], p["due_at"]) for p in outbox_events("reminder.scheduled")
                   if p["reason"]}
    assert {k: v[0] for k, v in rescheduled.items()} == {str(i): rows[i].reason for i in (held, follow_up, not_over)}
    assert dt.datetime.fromisoformat(rescheduled[str(held)][1]) == eight
    shown = metrics()
    assert 'fama_reminders_too_late_total{kind="day_before"} 1.0' in shown
    assert 'fama_reminders_too_late_total{kind="hours_before"} 2.0' in shown
    assert 'fama_reminders_held{kind="follow_up"} 2.0' in shown and 'fama_reminders_held{kind="day_before"} 1.0' in shown

    # Morning: the held ones come due (08:00 in the meeting's time) and go, once.
    move_clock(m.slug, zone_where_it_is(9))
    make_due_now([held, follow_up, not_over])
    rows = wait_for(lambda: settled(every), timeout=40, what="the held reminders handled")
    assert rows[held].status == rows[follow_up].status == "sent"
    assert (rows[not_over].status, rows[not_over].reason) == ("created", "held: the meeting has not ended")
    sending.publish_sends(every)  # stray duplicate tasks change nothing
    time.sleep(2)
    assert sorted(m.reference for m in dev_messages()) == sorted([str(held), str(follow_up)])
    assert {r.id: r.status for r in reminders() if r.id in every} == {
        started: "too-late", within_margin: "too-late", pointless: "too-late", held: "sent", follow_up: "sent",
        not_over: "created"}


def test_provider_refusing_for_six_hours_ends_what_came_too_late_and_sends_the_rest_once(processes):
    day = zone_where_it_is(12)  # 12:xx now, 18:xx six hours on: outside quiet hours either way
    with NotifyServer() as notify:
        env = {"NOTIFICATIONS_SMS_PROVIDER": "notify", "NOTIFICATIONS_NOTIFY_API_KEY": API_KEY,
               "NOTIFICATIONS_NOTIFY_BASE_URL": notify.url, "NOTIFICATIONS_NOTIFY_SMS_TEMPLATE_ID": str(uuid.uuid4()),
               "NOTIFICATIONS_MAX_SEND_ATTEMPTS": "100", "NOTIFICATIONS_RETRY_BASE_SECONDS": "0.5"}
        m = meeting("day-meeting", timezone=day)
        ids = referrals_to(m, 3)
        now = utcnow()
        tomorrow = occurrence(ids[0], "day_before", start=now + 26 * HOUR)
        soon = occurrence(ids[1], "hours_before", start=now + 2 * HOUR)
        follow_up = occurrence(ids[2], "follow_up", start=now - 20 * HOUR, end=now - 19 * HOUR)
        every = [tomorrow, soon, follow_up]
        notify.always = 500
        sender(processes, env)

        def tries(reminder_id) -> int:
            return sum(r["reference"] == str(reminder_id) for r in notify.requests)

        wait_for(lambda: all(tries(i) >= 2 for i in every), timeout=30, what="every reminder refused twice")
        shift_occurrences(every, -6 * HOUR)  # six hours of refusals later
        wait_for(lambda: reminder(soon).status == "too-late", timeout=40, what="the hours-before reminder too late")
        assert reminder(soon).reason.startswith("too late: the meeting had started")
        notify.always = None  # the provider is back
        wait_for(lambda: reminder(tomorrow).status == reminder(follow_up).status == "sent", timeout=60,
                 what="the others sent")
        received = [r["reference"] for r in notify.received]
        assert sorted(received) == sorted([str(tomorrow), str(follow_up)])
        refused_after_end = tries(soon)
        time.sleep(2)
        assert tries(soon) == refused_after_end  # not tried again once ended
        assert [p["reminder_id"] for p in outbox_events("reminder.failed")] == [str(soon)]


def test_backlog_crossing_into_quiet_hours_sends_soonest_meetings_first_within_the_rate_limit(processes):
    evening = zone_where_it_is(20)
    m = meeting("evening-meeting", timezone=evening)
    ids = referrals_to(m, 18)
    now = utcnow()
    # Sixteen reminders before meetings 1.5 h to 16.5 h ahead, due in the opposite order; two
    # follow-ups due before all of them.
    before = [occurrence(rid, "hours_before" if i % 2 else "day_before", start=now + dt.timedelta(minutes=90) + i * HOUR,
                         due=now - dt.timedelta(minutes=1 + i)) for i, rid in enumerate(ids[:16])]
    follow_ups = [occurrence(rid, "follow_up", start=now - 20 * HOUR, due=now - 2 * HOUR) for rid in ids[16:]]
    sender(processes, {"NOTIFICATIONS_RATE_LIMIT_PER_MINUTE": "60", "NOTIFICATIONS_RATE_BURST": "1"})
    wait_for(lambda: sum(reminder(i).status == "sent" for i in before) >= 4, timeout=40, what="four sent")
    night = zone_where_it_is(21)
    move_clock(m.slug, night)  # 21:00 passes while the backlog drains
    rows = wait_for(lambda: settled(before + follow_ups), timeout=60, what="the backlog handled")

    sent = [i for i in before if rows[i].status == "sent"]
    assert len(sent) >= 4 and sent == before[:len(sent)]  # the soonest meetings went first
    times = [aware(rows[i].sent_at) for i in sent]
    assert times == sorted(times)
    assert times[-1] - times[0] >= dt.timedelta(seconds=0.9 * (len(times) - 1))  # 60 a minute, not faster
    eight = local_today(night, "08:00") + 24 * HOUR
    for i, reminder_id in enumerate(before[len(sent):], start=len(sent)):
        row = rows[reminder_id]
        if aware(row.meeting_start) - dt.timedelta(minutes=30) < eight:  # meetings before 08:30
            assert (row.status, row.reason) == ("too-late", "too late: quiet hours end too close to the meeting"), i
        else:
            assert (row.status, row.reason, aware(row.due_at)) == ("created", "held: quiet hours", eight), i
    assert {(rows[i].status, rows[i].reason) for i in follow_ups} == {("created", "held: quiet hours")}
    assert sorted(msg.reference for msg in dev_messages()) == sorted(str(i) for i in sent)


def test_meeting_moved_while_its_reminder_is_held_cancels_it_and_the_new_plan_goes_once(processes):
    night = zone_where_it_is(3)
    m = meeting("moving-meeting", timezone=night, end_time="21:00")
    processes.worker("notifications", [queues.NOTIFICATIONS_EVENTS])
    [rid] = referrals_to(m, 1)
    waiting = by_kind(rid)["day_before"]
    make_due_now([waiting.id])
    sender(processes)
    wait_for(lambda: reminder(waiting.id).reason == "held: quiet hours", timeout=30, what="the reminder held")
    assert aware(reminder(waiting.id).due_at) == local_today(night, "08:00")

    moved = m.model_copy(update={"time": "18:00"})
    runtime.celery.send_task(queues.event_task("notifications"),
                             args=[signed(meeting_event(moved, "meeting.updated"))],
                             queue=queues.NOTIFICATIONS_EVENTS)
    new = wait_for(lambda: "meeting_moved" in by_kind(rid) and by_kind(rid), timeout=30, what="the move handled")
    assert (reminder(waiting.id).status, reminder(waiting.id).reason) == ("cancelled", "meeting moved")
    new_start = aware(waiting.meeting_start) - dt.timedelta(minutes=90)
    assert {aware(r.meeting_start) for r in new.values()} == {new_start}
    assert {aware(r.meeting_end) for r in new.values()} == {new_start + dt.timedelta(hours=3)}  # still ends 21:00

    # Morning: everything still pending comes due; the held reminder of the old time never goes.
    move_clock(m.slug, zone_where_it_is(12))
    make_due_now([r.id for r in new.values() if r.kind != "follow_up"])
    sending.publish_sends([waiting.id])  # a stray task for the cancelled one
    wait_for(lambda: all(reminder(r.id).status == "sent" for r in new.values() if r.kind != "follow_up"), timeout=40,
             what="the new reminders sent")
    time.sleep(1)
    assert sorted(msg.reference for msg in dev_messages()) == sorted(str(r.id) for r in new.values()
                                                                     if r.kind != "follow_up")
    assert reminder(waiting.id).status == "cancelled"
