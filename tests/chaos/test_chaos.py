"""Nothing lost, nothing doubled: a steady stream of referrals through the whole of FAMA (real
APIs, workers, sender and schedulers over Postgres and a private Redis) while processes are
killed with SIGKILL, Redis restarts, relays die between commit and send, and the notifications
service is down for a while. Then everything is checked against the databases.

Short form (in ``make test``): CHAOS_REFERRALS=150, a 10 s notifications outage.
Long form: ``CHAOS_REFERRALS=2000 make chaos`` (a 60 s outage; CHAOS_OUTAGE_SECONDS overrides).
"""

from __future__ import annotations

import datetime as dt
import os
import random
import time

import httpx
import pytest

from services.directory.runtime import runtime as directory
from services.notifications.runtime import runtime as notifications
from services.referrals.runtime import runtime as referrals
from shared.meeting_time import meeting_guide_weekday
from tests.chaos import harness
from tests.chaos.harness import ChaosStack, PhoneScanner, PrivateRedis, Stream, TimeMachine
from tests.services.notifications.support import ANY_HOUR
from tests.support.auth import auth
from tests.support.broker import event_bodies, queued_messages
from tests.support.processes import wait_for

REFERRALS = int(os.environ.get("CHAOS_REFERRALS", "150"))
LONG = REFERRALS >= 1000
OUTAGE = float(os.environ.get("CHAOS_OUTAGE_SECONDS", "60" if LONG else "10"))
SEED = int(os.environ.get("CHAOS_SEED", str(int(time.time()))))
# Rough length of the fault sequence, to spread the stream over all of it.
PLANNED_SECONDS = 60 + OUTAGE + (40 if LONG else 0)

pytestmark = [pytest.mark.chaos, pytest.mark.usefixtures("clean_state"),
              pytest.mark.timeout(int(900 + REFERRALS * 0.6 + OUTAGE))]

PHASES = ("baseline", "kill -9 workers", "redis restart", "relay killed", "notifications down", "after")
SITES = (("croydon", "smart"), ("sheffield", "aa"), ("birmingham", "na"))


def meetings_ahead() -> list[dict]:
    """Six meetings 2 to 4 days ahead at 14:00 or 19:00 London time: every referral gets the
    day-before, hours-before and follow-up reminders, none in quiet hours."""
    today = dt.datetime.now(dt.UTC).date()
    out = []
    for n, (site, fellowship) in enumerate(SITES * 2):
        day = meeting_guide_weekday(today + dt.timedelta(days=2 + n % 3))
        out.append({"slug": f"chaos-{site}-{fellowship}-{n}", "name": f"Chaos test meeting {n}", "fellowship": fellowship,
                    "day": day, "time": "14:00" if n < 3 else "19:00", "end_time": "20:30", "types": ["O"],
                    "attendance_option": "in_person", "location": "Community hub", "postcode": "CR0",
                    "latitude": 51.372, "longitude": -0.074, "site_id": site})
    return out


def settle(stream: Stream, machine: TimeMachine, engines: dict, timeout: float, timeline: list,
           stack: ChaosStack, broker: PrivateRedis, prefix: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        state = harness.outstanding(stream, machine, engines)
        if not any(state.values()):
            return
        if time.monotonic() > deadline:
            lost = harness.unconsumed_details(engines)
            seen = {line.split()[2]: [name for name, log in stack.all_logs() if line.split()[2] in log] for line in lost}
            in_redis = harness.where_in_redis(broker.client(), prefix, list(seen))
            raise AssertionError(f"not settled after {timeout:.0f} s: {state}; {lost}; logged by: {seen}; "
                                 f"in Redis: {in_redis}; "
                                 f"phases began (UTC): {timeline}")
        time.sleep(1.0)


def test_nothing_lost_or_doubled_under_faults(redis_prefix, capsys):
    rng = random.Random(SEED)
    private_redis = PrivateRedis()
    env = {"REDIS_URL": private_redis.url, "NOTIFICATIONS_SENDING_STALE_SECONDS": "10",
           "NOTIFICATIONS_SWEEP_SECONDS": "2", "NOTIFICATIONS_QUEUED_STALE_SECONDS": "30",
           "NOTIFICATIONS_DISPATCH_SECONDS": "1", "NOTIFICATIONS_RATE_LIMIT_PER_MINUTE": "0",
           # The ground truth is each referral's three planned reminders (the confirmation has its own tests).
           "NOTIFICATIONS_CONFIRMATION_AT_REFERRAL": "false",
           **ANY_HOUR}  # see TimeMachine
    stack = ChaosStack(env)
    engines = {"directory": directory.engine, "referrals": referrals.engine, "notifications": notifications.engine}
    machine = TimeMachine(notifications.engine)
    stream: Stream | None = None
    notes: dict[str, str] = {}
    phases: list[str] = []
    timeline: list[str] = []
    try:
        t_start = time.monotonic()
        stack.start_all()
        meetings = meetings_ahead()
        harness.publish_meetings(stack, engines, meetings)
        startup = time.monotonic() - t_start

        stream = Stream(stack.urls["referrals"], meetings, REFERRALS, rate=2 * REFERRALS / PLANNED_SECONDS).start()
        machine.run_every(2.0)

        def phase(name: str) -> None:
            phases.append(name)
            stream.allowed = REFERRALS * len(phases) // len(PHASES)
            timeline.append(f"{name} {harness.now_utc():%H:%M:%S}")
            stream.phase = name

        phase("baseline")
        time.sleep(6)

        phase("kill -9 workers")
        killed = []
        for _ in range(3):
            for service in ("directory", "referrals", "notifications"):
                killed.append(harness.kill_random_worker(stack, service, rng))
                timeline.append(f"killed {killed[-1]} {harness.now_utc():%H:%M:%S.%f}")
            time.sleep(1.0)
            stack.restart_all([n for n in ("directory-worker", "referrals-worker", "notifications-worker",
                                           "notifications-sender") if stack.processes[n].proc.poll() is not None])
            time.sleep(2.0 if not LONG else 8.0)
        notes["kill -9 workers"] = f"{len(killed)} kills: " + ", ".join(sorted(set(killed)))

        phase("redis restart")
        waiting = sum(private_redis.client().llen(f"{redis_prefix}{q}") for q in
                      ("directory.events", "referrals.events", "notifications.events", "notifications.send"))
        private_redis.restart(down_seconds=3.0 if not LONG else 10.0)
        notes["redis restart"] = f"{waiting} messages waiting at shutdown, kept by the AOF"
        time.sleep(5)

        phase("relay killed")
        # The relays die: the referrals API mid-request (a commit may be made and its relay never
        # run) and both schedulers' outbox sweeps. The notifications scheduler comes back with its
        # dispatcher but no sweep, so every send from now on (the sender leaves its events to the
        # sweep) is committed and left unrelayed until the real scheduler returns. The referral
        # stream keeps the sender busy: nothing here depends on catching work in flight.
        for name in ("notifications-scheduler", "referrals-scheduler", "referrals-api"):
            stack.kill(name)
        stack.restart_all(["referrals-api"])
        stack.restart_with("notifications-scheduler", {"OUTBOX_SWEEP_SECONDS": "3600"})
        committed_unsent = wait_for(lambda: harness.unrelayed(engines["notifications"], 1.5)
                                    + harness.unrelayed(engines["referrals"], 1.5), timeout=240, interval=0.5,
                                    what="events committed and left unrelayed by the dead relays")
        stack.restart_all(["referrals-scheduler", "notifications-scheduler"])
        notes["relay killed"] = f"{committed_unsent} events committed, not sent, when the relays died"

        phase("notifications down")
        for name in ("notifications-api", "notifications-worker", "notifications-sender", "notifications-scheduler"):
            stack.kill(name)
        time.sleep(OUTAGE)

        def waiting_with_referrals() -> list[tuple[dict, dict]] | None:
            queued = queued_messages(private_redis.client(), redis_prefix, "notifications.events")
            waiting = [(m, e) for m in queued for e in event_bodies(m)]  # the relay sends events in batches
            return waiting if any(e["type"] == "referral.created" for _, e in waiting) else None

        # The stream goes on during the outage: referrals made now wait on the broker for notifications.
        waiting = wait_for(waiting_with_referrals, timeout=240, interval=0.5,
                           what="referral.created events waiting for notifications")
        created = [(m, e) for m, e in waiting if e["type"] == "referral.created"]
        scanner = PhoneScanner([harness.e164(i) for i in range(REFERRALS)])
        in_clear_on_broker = [e["event_id"] for m, e in created if scanner.find(m["raw"] + str(e))]
        sealed = sum(bool(e["payload"].get("contact_ciphertext")) for _, e in created)
        stack.restart_all(["notifications-api", "notifications-worker", "notifications-sender",
                           "notifications-scheduler"])
        notes["notifications down"] = (f"{OUTAGE:.0f} s down; {len(waiting)} events waited on the broker, "
                                       f"{sealed} with sealed contact details")

        phase("after")
        stream.done.wait(timeout=PLANNED_SECONDS * 3)
        t_stream_end = time.monotonic()
        settle(stream, machine, engines, timeout=600 if not LONG else 1200, timeline=timeline, stack=stack,
               broker=private_redis, prefix=redis_prefix)
        settle_seconds = time.monotonic() - t_stream_end
        machine.stop()

        # --- ground truth --------------------------------------------------------------
        per_referral = harness.per_referral_truth(engines["referrals"], engines["notifications"],
                                                  machine.planned_due, harness.expected_plan)
        table, totals = harness.phase_table(phases, stream.attempts, per_referral, notes)
        outcomes = {a.outcome for a in stream.attempts}
        with capsys.disabled():
            print(f"\nchaos run: {REFERRALS} referrals, seed {SEED}, start-up {startup:.0f} s, "
                  f"stream {t_stream_end - t_start - startup:.0f} s, settled {settle_seconds:.0f} s later")
            print(table)

        assert outcomes <= {"created", "ambiguous"}, [a for a in stream.attempts if a.outcome not in ("created", "ambiguous")]
        assert sum(t["lost"] for t in totals.values()) == 0, "a referral answered 201 is missing"
        assert sum(t["dup"] for t in totals.values()) == 0, "a referral is stored twice"
        assert sum(t["missing"] for t in totals.values()) == 0, "a planned reminder is missing"
        assert sum(t["extra"] for t in totals.values()) == 0, "a reminder is duplicated or not the planned one"
        assert sum(t["sent twice"] for t in totals.values()) == 0, "a reminder reached the provider twice"
        assert sum(t["unsent"] for t in totals.values()) == 0, "a due reminder was never sent"
        assert all(info["status not sent"] == 0 for info in per_referral.values())
        assert sum(t["reminders"] for t in totals.values()) == 3 * len(per_referral), "every referral has 3 reminders"
        assert harness.scalar(engines["notifications"], "SELECT count(*) FROM dev_messages WHERE reference NOT IN "
                                                        "(SELECT id::text FROM reminders)") == 0
        assert committed_unsent > 0, "the relay phase left nothing unrelayed: it tested nothing"

        drift = harness.counter_drift(engines["directory"], engines["referrals"], engines["notifications"])
        assert drift == {}, f"directory counters differ from the truth: {drift}"
        response = httpx.get(f"{stack.urls['directory']}/engagement", headers=auth("admin"), timeout=30)
        assert response.json()["totals"]["referrals_made"] == len(per_referral)
        assert response.json()["totals"]["reminders_sent"] == 3 * len(per_referral)
        # The referral desk's view of each reminder agrees with notifications.
        views = harness.rows(engines["referrals"], "SELECT status, count(*) FROM referral_reminders GROUP BY 1")
        assert [tuple(v) for v in views] == [("sent", 3 * len(per_referral))]
        harness.assert_every_event_delivered_once(engines)

        # --- personal data -------------------------------------------------------------------
        assert created and sealed == len(created), "referral.created events queued during the outage carry sealed contacts"
        assert in_clear_on_broker == [], "a contact detail was on the broker in clear"
        assert scanner.find("call 07700 100001 today") and scanner.find('{"to": "+447700100002"}'), "the scanner works"
        assert not scanner.find("succeeded in 0.02" + harness.e164(3)[3:] + "95s"), "a longer number is no phone number"
        hits = []
        for engine in engines.values():
            hits += scanner.scan_database(engine)
        hits += scanner.scan_redis(private_redis.client(), redis_prefix)
        logs = stack.all_logs()
        assert sum(len(content) for _, content in logs) > 10_000, "the processes logged"
        for name, content in logs:
            hits += [f"log of {name}: {n}" for n in scanner.find(content)]
        assert hits == [], hits[:20]
    finally:
        if stream is not None:
            stream.stop()
        machine.stop()
        stack.stop()
        private_redis.stop()
