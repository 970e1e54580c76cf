"""The outbox and inbox on SQLite and Postgres, against the real Redis broker."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import structlog
import structlog.testing
from prometheus_client import REGISTRY
from sqlalchemy import Column, Integer, MetaData, String, Table, func, select
from sqlalchemy.exc import OperationalError

import shared.inbox
from shared.celery_app import make_celery
from shared.db import make_engine, make_sessionmaker, transaction
from shared.events import Event, MeetingSnapshot, ReferralCreated, refusal, sign
from shared.inbox import consume, inbox_table
from shared.inbox import prune as prune_inbox
from shared.outbox import Outbox, outbox_table, receipt_commands, receipt_key
from shared.runtime import ServiceRuntime
from shared.settings import ServiceSettings
from tests.support.broker import queued_messages
from tests.support.events import signed
from tests.support.servers import create_database, drop_database


def meeting(slug: str = "monday-big-book") -> MeetingSnapshot:
    return MeetingSnapshot(slug=slug, name="Monday Big Book", fellowship="aa", day=1, time="19:30")


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path, postgres_admin_url, redis_client, redis_prefix):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/outbox.db"
    else:
        name = f"fama_outbox_{uuid.uuid4().hex[:8]}"
        url = create_database(postgres_admin_url, name)
        request.addfinalizer(lambda: drop_database(postgres_admin_url, name))
    metadata = MetaData()
    things = Table("things", metadata, Column("id", Integer, primary_key=True), Column("name", String(50)))
    outbox_t = outbox_table(metadata)
    inbox_t = inbox_table(metadata)
    engine = make_engine(url)
    metadata.create_all(engine)
    # A private queue space per test so counts are exact.
    prefix = f"{redis_prefix}{uuid.uuid4().hex[:6]}:"
    settings = ServiceSettings(redis_key_prefix=prefix)
    outbox = Outbox(outbox_t, make_celery("directory", settings), producer="directory",
                    signing_keys=settings.directory_event_keys)
    factory = make_sessionmaker(engine)
    outbox.relay_after_commit(factory)

    yield SimpleNamespace(url=url, engine=engine, factory=factory, outbox=outbox, things=things, inbox=inbox_t,
                          queued=lambda queue: queued_messages(redis_client, prefix, queue),
                          redis=redis_client, prefix=prefix)
    engine.dispose()


def test_rolled_back_event_is_never_sent(store):
    with pytest.raises(RuntimeError):
        with transaction(store.factory) as session:
            session.execute(store.things.insert().values(name="x"))
            store.outbox.record(session, "meeting.published", meeting())
            raise RuntimeError("the change failed")
    assert store.outbox.sweep(store.factory, older_than=dt.timedelta(0)) == 0
    with store.factory() as session:
        assert session.scalar(select(func.count()).select_from(store.outbox.table)) == 0
        assert session.scalar(select(func.count()).select_from(store.things)) == 0
    assert store.queued("referrals.events") == []
    assert store.queued("notifications.events") == []


def test_an_event_recorded_in_a_rolled_back_savepoint_is_never_sent(store):
    # As a held feed import: the changes and their events are undone, the transaction commits.
    with transaction(store.factory) as session:
        kept = store.outbox.record(session, "meeting.published", meeting("kept"))
        with pytest.raises(RuntimeError):
            with session.begin_nested():
                with session.begin_nested():  # a meeting's own savepoint inside the import's
                    store.outbox.record(session, "meeting.published", meeting("undone"))
                store.outbox.record(session, "meeting.updated", meeting("undone-too"))
                raise RuntimeError("held")
        with session.begin_nested():  # released: its event stands
            after = store.outbox.record(session, "meeting.updated", meeting("after"))
    for queue in ("referrals.events", "notifications.events"):
        [message] = store.queued(queue)
        assert [b["event_id"] for b in message["args"][0]] == [str(kept.event_id), str(after.event_id)]
    with store.factory() as session:
        assert session.scalar(select(func.count()).select_from(store.outbox.table)) == 4
    # A savepoint released, then the whole transaction rolled back (a feed import that fails later).
    with pytest.raises(RuntimeError):
        with transaction(store.factory) as session:
            with session.begin_nested():
                store.outbox.record(session, "meeting.published", meeting("never"))
            raise RuntimeError("the import failed")
    assert [len(store.queued(q)) for q in ("referrals.events", "notifications.events")] == [1, 1]
    with store.factory() as session:
        assert session.scalar(select(func.count()).select_from(store.outbox.table)) == 4


def test_committed_event_reaches_each_subscriber_once(store):
    with transaction(store.factory) as session:
        evt = store.outbox.record(session, "meeting.published", meeting())
    # Sent right after commit, one message per subscriber, none to the producer itself.
    for queue, task in (("referrals.events", "referrals.handle_event"),
                        ("notifications.events", "notifications.handle_event")):
        messages = store.queued(queue)
        assert [m["task"] for m in messages] == [task]
        assert messages[0]["args"][0]["event_id"] == str(evt.event_id)
        assert messages[0]["args"][0]["payload"]["slug"] == "monday-big-book"
    assert store.queued("directory.events") == []
    # A later sweep finds nothing left to send.
    assert store.outbox.sweep(store.factory, older_than=dt.timedelta(0)) == 0
    assert len(store.queued("referrals.events")) == 1
    with store.factory() as session:
        assert store.outbox.unrelayed(session) == 0


def test_events_of_a_session_without_the_relay_are_left_to_the_sweep(store):
    # A session whose commits nobody relays (as the notifications sender's): its rows wait unrelayed.
    bare = make_sessionmaker(store.engine)
    with transaction(bare) as session:
        store.outbox.record(session, "meeting.updated", meeting())
    assert store.queued("referrals.events") == []
    with store.factory() as session:
        assert store.outbox.unrelayed(session) == 2
    assert store.outbox.sweep(store.factory, older_than=dt.timedelta(0)) == 2
    # A single event goes as it always did: one handle_event message with the event as its argument.
    for queue, task in (("referrals.events", "referrals.handle_event"),
                        ("notifications.events", "notifications.handle_event")):
        messages = store.queued(queue)
        assert [m["task"] for m in messages] == [task]
        assert messages[0]["args"][0]["type"] == "meeting.updated"
    assert store.outbox.sweep(store.factory, older_than=dt.timedelta(0)) == 0


def test_send_failure_keeps_the_row_for_the_sweep(store):
    def broker_down(subscriber, bodies):
        raise ConnectionError("redis unavailable")

    real_send = store.outbox.send_batch
    store.outbox.send_batch = broker_down
    with transaction(store.factory) as session:
        store.outbox.record(session, "meeting.published", meeting())
    with store.factory() as session:
        assert store.outbox.unrelayed(session) == 2
    store.outbox.send_batch = real_send
    assert store.outbox.sweep(store.factory, older_than=dt.timedelta(0)) == 2
    assert len(store.queued("notifications.events")) == 1


def test_a_send_that_fails_after_commit_puts_back_its_rows_only(store):
    real_send = store.outbox.send_batch

    def notifications_send_fails(subscriber, bodies):
        if subscriber == "notifications":
            raise ConnectionError("redis unavailable")
        real_send(subscriber, bodies)

    store.outbox.send_batch = notifications_send_fails
    with transaction(store.factory) as session:
        evt = store.outbox.record(session, "meeting.published", meeting())
    # Sent to referrals and marked in the commit; back to unrelayed for notifications (one attempt).
    assert outbox_rows(store, "referrals") == [(True, 1)]
    assert outbox_rows(store, "notifications") == [(False, 1)]
    store.outbox.send_batch = real_send
    assert store.outbox.sweep(store.factory, older_than=dt.timedelta(0)) == 1
    assert [m["args"][0]["event_id"] for m in store.queued("notifications.events")] == [str(evt.event_id)]
    assert len(store.queued("referrals.events")) == 1
    assert outbox_rows(store, "notifications") == [(True, 2)]


def test_the_relayed_mark_is_written_in_the_commit_itself(store):
    from sqlalchemy import event as sa_event

    commits = []
    sa_event.listen(store.engine, "commit", lambda _conn: commits.append(1))
    with transaction(store.factory) as session:
        session.execute(store.things.insert().values(name="x"))
        store.outbox.record(session, "meeting.published", meeting())
    assert len(commits) == 1  # no second transaction to mark the rows after the send
    assert outbox_rows(store, "referrals") == outbox_rows(store, "notifications") == [(True, 1)]
    assert len(store.queued("referrals.events")) == len(store.queued("notifications.events")) == 1


def test_a_process_killed_between_commit_and_send_loses_nothing(store, monkeypatch):
    # The rows were committed marked relayed; the process dies before its relay sends them.
    monkeypatch.setattr(store.outbox, "relay_recorded", lambda factory, rows: 0)
    with transaction(store.factory) as session:
        evt = store.outbox.record(session, "meeting.updated", meeting())
    assert store.queued("referrals.events") == store.queued("notifications.events") == []
    # Not the sweep's: the rows look relayed. No subscriber left a receipt, so the confirm sends
    # them once the resend delay has passed, as it does a message the broker dropped.
    assert store.outbox.sweep(store.factory, older_than=dt.timedelta(0)) == 0
    resend_after = dt.timedelta(seconds=60)

    def confirm():
        return store.outbox.confirm(store.factory, store.redis, prefix=store.prefix, resend_after=resend_after)

    assert confirm() == {"confirmed": 0, "resent": 0}
    _age_relayed_rows(store, dt.timedelta(minutes=1, seconds=1))
    assert confirm() == {"confirmed": 0, "resent": 2}
    for queue, sub in SUBSCRIBERS:
        assert [m["args"][0]["event_id"] for m in store.queued(queue)] == [str(evt.event_id)]
        assert outbox_rows(store, sub) == [(True, 2)]
    for _, sub in SUBSCRIBERS:
        receipt_commands(store.redis, store.prefix, sub, evt.event_id)
    _age_relayed_rows(store, dt.timedelta(minutes=1))
    assert confirm() == {"confirmed": 2, "resent": 0}


def test_same_message_delivered_twice_changes_nothing(store):
    evt = Event.new("meeting.published", meeting(), producer="directory")
    calls = []

    def handler(session, event):
        session.execute(store.things.insert().values(name=event.payload["slug"]))
        calls.append(event.event_id)

    handlers = {"meeting.published": handler}
    with store.factory() as session:
        assert consume(session, store.inbox, evt, handlers) is True
    with store.factory() as session:
        assert consume(session, store.inbox, Event.model_validate(evt.model_dump(mode="json")), handlers) is False
    with store.factory() as session:
        assert session.scalar(select(func.count()).select_from(store.things)) == 1
        assert session.scalar(select(func.count()).select_from(store.inbox)) == 1
    assert calls == [evt.event_id]


def test_handler_failure_leaves_event_unprocessed(store):
    evt = Event.new("meeting.published", meeting(), producer="directory")

    def failing(session, event):
        session.execute(store.things.insert().values(name="half-done"))
        raise ValueError("boom")

    with store.factory() as session:
        with pytest.raises(ValueError):
            consume(session, store.inbox, evt, {"meeting.published": failing})
        session.rollback()
    with store.factory() as session:
        assert session.scalar(select(func.count()).select_from(store.things)) == 0
        assert session.scalar(select(func.count()).select_from(store.inbox)) == 0
    # Redelivery after the fix processes it.
    with store.factory() as session:
        assert consume(session, store.inbox, evt, {"meeting.published": lambda s, e: None}) is True


def _age_relayed_rows(store, by: dt.timedelta) -> None:
    t = store.outbox.table
    with transaction(store.factory) as session:
        for row in session.execute(select(t.c.id, t.c.relayed_at)).all():
            session.execute(t.update().where(t.c.id == row.id).values(relayed_at=row.relayed_at - by))


def test_event_the_broker_dropped_is_sent_again_until_a_receipt_confirms_it(store):
    resend_after = dt.timedelta(seconds=60)
    with transaction(store.factory) as session:
        evt = store.outbox.record(session, "meeting.published", meeting())
    store.redis.delete(f"{store.prefix}referrals.events")  # the broker lost the referrals copy
    receipt_commands(store.redis, store.prefix, "notifications", evt.event_id)  # notifications processed it

    def confirm():
        return store.outbox.confirm(store.factory, store.redis, prefix=store.prefix, resend_after=resend_after)

    # Too early to tell a lost message from a slow one: nothing happens.
    assert confirm() == {"confirmed": 0, "resent": 0}
    _age_relayed_rows(store, dt.timedelta(minutes=2))
    assert confirm() == {"confirmed": 1, "resent": 1}
    assert [m["args"][0]["event_id"] for m in store.queued("referrals.events")] == [str(evt.event_id)]
    assert store.queued("notifications.events") == [store.queued("notifications.events")[0]]  # not sent again
    # The next attempt waits twice as long.
    _age_relayed_rows(store, dt.timedelta(minutes=1, seconds=30))
    assert confirm() == {"confirmed": 0, "resent": 0}
    # The referrals worker processes the second copy and leaves its receipt.
    receipt_commands(store.redis, store.prefix, "referrals", evt.event_id)
    _age_relayed_rows(store, dt.timedelta(minutes=10))
    assert confirm() == {"confirmed": 1, "resent": 0}
    t = store.outbox.table
    with store.factory() as session:
        assert session.scalar(select(func.count()).select_from(t).where(t.c.confirmed_at.is_(None))) == 0
    assert len(store.queued("referrals.events")) == 1


# --- Batches: the relay sends a subscriber's events together, the consumer handles each alone. ---

SUBSCRIBERS = (("referrals.events", "referrals"), ("notifications.events", "notifications"))


def record_for_the_sweep(store, count: int) -> list[Event]:
    """``count`` meeting events committed by a session that leaves them to the sweep."""
    bare = make_sessionmaker(store.engine)
    with transaction(bare) as session:
        return [store.outbox.record(session, "meeting.published", meeting(f"meeting-{i}")) for i in range(count)]


def headers(message: dict) -> dict:
    return json.loads(message["raw"])["headers"]


def outbox_rows(store, subscriber: str) -> list[tuple[bool, int]]:
    """(relayed?, attempts) of the subscriber's rows, in id order."""
    t = store.outbox.table
    with store.factory() as session:
        rows = session.execute(select(t.c.relayed_at, t.c.attempts).where(t.c.subscriber == subscriber).order_by(t.c.id))
        return [(r.relayed_at is not None, r.attempts) for r in rows]


def test_swept_events_reach_each_subscriber_as_one_batch_in_order(store):
    events = record_for_the_sweep(store, 3)
    assert store.outbox.sweep(store.factory, older_than=dt.timedelta(0)) == 6
    for queue, sub in SUBSCRIBERS:
        messages = store.queued(queue)
        assert [m["task"] for m in messages] == [f"{sub}.handle_events"]
        assert [b["event_id"] for b in messages[0]["args"][0]] == [str(e.event_id) for e in events]
        assert messages[0]["args"][0][0]["payload"]["slug"] == "meeting-0"
        assert headers(messages[0])["argsrepr"] == "[<3 events: meeting.published>]"
        assert headers(messages[0])["kwargsrepr"] == "{}"
    with store.factory() as session:
        assert store.outbox.unrelayed(session) == 0


def test_a_large_backlog_goes_in_batches_of_a_hundred(store):
    events = record_for_the_sweep(store, 250)
    assert store.outbox.sweep(store.factory, older_than=dt.timedelta(0)) == 500
    for queue, sub in SUBSCRIBERS:
        messages = store.queued(queue)
        assert [(m["task"], len(m["args"][0])) for m in messages] == [(f"{sub}.handle_events", 100)] * 2 + [
            (f"{sub}.handle_events", 50)]
        assert [b["event_id"] for m in messages for b in m["args"][0]] == [str(e.event_id) for e in events]
    assert set(outbox_rows(store, "referrals")) == {(True, 1)}


def test_a_batch_that_fails_to_send_is_kept_with_everything_after_it(store):
    # Rows alternate referrals/notifications; batches go oldest first: referrals 1-100,
    # notifications 1-100, referrals 101-150, notifications 101-150.
    record_for_the_sweep(store, 150)
    real_send, calls = store.outbox.send_batch, []

    def second_send_fails(subscriber, bodies):
        calls.append((subscriber, len(bodies)))
        if len(calls) == 2:
            raise ConnectionError("redis unavailable")
        real_send(subscriber, bodies)

    store.outbox.send_batch = second_send_fails
    assert store.outbox.relay(store.factory) == 100
    assert calls == [("referrals", 100), ("notifications", 100)]  # stopped at the failure
    assert outbox_rows(store, "referrals") == [(True, 1)] * 100 + [(False, 0)] * 50
    assert outbox_rows(store, "notifications") == [(False, 1)] * 100 + [(False, 0)] * 50
    assert [len(m["args"][0]) for m in store.queued("referrals.events")] == [100]
    assert store.queued("notifications.events") == []

    store.outbox.send_batch = real_send
    assert store.outbox.sweep(store.factory, older_than=dt.timedelta(0)) == 200
    assert [len(m["args"][0]) for m in store.queued("referrals.events")] == [100, 50]
    assert [len(m["args"][0]) for m in store.queued("notifications.events")] == [100, 50]
    assert outbox_rows(store, "notifications") == [(True, 2)] * 100 + [(True, 1)] * 50


def test_unconfirmed_events_are_sent_again_in_batches(store):
    with transaction(store.factory) as session:  # relayed right after commit, as one batch each
        events = [store.outbox.record(session, "meeting.published", meeting(f"meeting-{i}")) for i in range(3)]
    assert [m["task"] for m in store.queued("referrals.events")] == ["referrals.handle_events"]
    for queue, _ in SUBSCRIBERS:  # the broker lost everything
        store.redis.delete(f"{store.prefix}{queue}")
    receipt_commands(store.redis, store.prefix, "referrals", events[1].event_id)  # but one was processed
    _age_relayed_rows(store, dt.timedelta(minutes=2))

    resend_after = dt.timedelta(seconds=60)
    assert store.outbox.confirm(store.factory, store.redis, prefix=store.prefix, resend_after=resend_after) == {
        "confirmed": 1, "resent": 5}
    ids = [str(e.event_id) for e in events]
    for queue, sub in SUBSCRIBERS:
        messages = store.queued(queue)
        expected = [ids[0], ids[2]] if sub == "referrals" else ids
        assert [m["task"] for m in messages] == [f"{sub}.handle_events"]
        assert [b["event_id"] for b in messages[0]["args"][0]] == expected
    assert outbox_rows(store, "referrals") == [(True, 2), (True, 1), (True, 2)]
    assert outbox_rows(store, "notifications") == [(True, 2)] * 3
    # Each resent row waits again before its next resend.
    assert store.outbox.confirm(store.factory, store.redis, prefix=store.prefix, resend_after=resend_after) == {
        "confirmed": 0, "resent": 0}


@pytest.fixture
def consumer(store):
    """A ServiceRuntime of the referrals service on the store's database, with its event tasks."""
    metadata = MetaData()
    things = Table("things", metadata, Column("id", Integer, primary_key=True), Column("name", String(50)))
    runtime = ServiceRuntime("referrals", lambda: ServiceSettings(database_url=store.url, redis_key_prefix=store.prefix),
                             metadata, Path("."))
    seen, poison = [], set()

    def handler(session, event):
        seen.append((event.payload["slug"], structlog.contextvars.get_contextvars().get("event_id")))
        session.execute(things.insert().values(name=event.payload["slug"]))
        if event.payload["slug"] in poison:
            raise ValueError("a handler bug")

    handle_event = runtime.register_event_task({"meeting.published": handler})
    yield SimpleNamespace(runtime=runtime, handle_event=handle_event, handle_events=runtime.batch_event_task,
                          seen=seen, poison=poison)
    runtime.reset_caches()


def bodies_of(*slugs: str) -> list[dict]:
    return [signed(Event.new("meeting.published", meeting(slug), producer="directory")) for slug in slugs]


def things_and_inbox(store) -> tuple[list[str], set[str]]:
    with store.factory() as session:
        names = list(session.scalars(select(store.things.c.name).order_by(store.things.c.id)))
        inbox = {str(i) for i in session.scalars(select(store.inbox.c.event_id))}
    return names, inbox


def receipts(store, subscriber: str, bodies: list[dict]) -> list[bool]:
    return [store.redis.exists(receipt_key(store.prefix, subscriber, b["event_id"])) == 1 for b in bodies]


def test_both_event_tasks_are_registered_with_the_same_options(consumer):
    tasks = consumer.runtime.celery.tasks
    single, batch = tasks["referrals.handle_event"], tasks["referrals.handle_events"]
    assert batch is consumer.handle_events._get_current_object()
    for option in ("acks_late", "autoretry_for", "retry_backoff", "retry_backoff_max", "retry_jitter", "max_retries"):
        assert getattr(batch, option) == getattr(single, option), option
    assert batch.max_retries == 10 and OperationalError in batch.autoretry_for


def test_a_batch_is_handled_event_by_event_and_only_once(store, consumer):
    bodies = bodies_of("a", "b", "c")
    assert consumer.handle_events.run(bodies) == 3
    names, inbox = things_and_inbox(store)
    assert names == ["a", "b", "c"]
    assert inbox == {b["event_id"] for b in bodies}
    assert receipts(store, "referrals", bodies) == [True, True, True]
    # Each event was handled with its own id in the log context, cleared afterwards.
    assert consumer.seen == [(b["payload"]["slug"], b["event_id"]) for b in bodies]
    assert structlog.contextvars.get_contextvars() == {}

    # The same batch again (a redelivery) changes nothing; one new event in it is processed.
    assert consumer.handle_events.run(bodies) == 0
    more = bodies_of("d")
    assert consumer.handle_events.run(bodies + more) == 1
    assert things_and_inbox(store)[0] == ["a", "b", "c", "d"]


def test_a_batch_of_new_events_is_one_transaction(store, consumer):
    """The events of a batch commit together with their inbox rows: one commit, not one each."""
    from sqlalchemy import event as sa_event

    commits = []
    sa_event.listen(consumer.runtime.engine, "commit", lambda _conn: commits.append(1))
    first = bodies_of("a")
    assert consumer.handle_event.run(first[0]) is True
    commits.clear()
    bodies = first + bodies_of("b", "c", "d")
    assert consumer.handle_events.run(bodies) == 3  # "a" was processed before: skipped
    assert len(commits) == 1
    assert things_and_inbox(store)[0] == ["a", "b", "c", "d"]
    assert receipts(store, "referrals", bodies) == [True, True, True, True]


def test_a_failing_event_fails_alone_and_the_batch_raises_afterwards(store, consumer):
    consumer.poison.add("b")
    bodies = bodies_of("a", "b", "c")
    with pytest.raises(ValueError, match="a handler bug"):
        consumer.handle_events.run(bodies)
    names, inbox = things_and_inbox(store)
    assert names == ["a", "c"]  # b's effects were rolled back with its inbox row
    assert inbox == {bodies[0]["event_id"], bodies[2]["event_id"]}
    assert receipts(store, "referrals", bodies) == [True, False, True]
    assert structlog.contextvars.get_contextvars() == {}

    # The outbox sends b again later (no receipt); once fixed it is processed, the others skipped.
    consumer.poison.clear()
    assert consumer.handle_events.run(bodies) == 1
    assert sorted(things_and_inbox(store)[0]) == ["a", "b", "c"]
    assert receipts(store, "referrals", bodies) == [True, True, True]


def test_a_database_error_in_a_batch_is_the_one_raised_so_the_batch_is_retried(store, consumer, monkeypatch):
    consumer.poison.add("a")
    real_handle = consumer.runtime.handle

    def database_blip(body, handlers, *, event=None):
        if body["payload"]["slug"] == "b":
            raise OperationalError("SELECT 1", {}, ConnectionError("connection reset"))
        return real_handle(body, handlers, event=event)

    monkeypatch.setattr(consumer.runtime, "handle", database_blip)
    with pytest.raises(OperationalError):  # retried by Celery (autoretry_for), not the handler bug first
        consumer.handle_events.run(bodies_of("a", "b", "c"))
    assert things_and_inbox(store)[0] == ["c"]


def test_a_single_event_message_is_still_handled(store, consumer):
    body = bodies_of("solo")[0]
    assert consumer.handle_event.run(body) is True
    assert consumer.handle_event.run(body) is False
    assert things_and_inbox(store)[0] == ["solo"]
    assert receipts(store, "referrals", [body]) == [True]


# --- Personal data in the outbox: only to the subscriber that needs it, and not for long. ---

SEALED = "gAAAAA-sealed-contact-stand-in"


def referral_created(referral_id: uuid.UUID | None = None) -> ReferralCreated:
    return ReferralCreated(referral_id=referral_id or uuid.uuid4(), site_id="croydon", meeting_slug="m", fellowship="aa",
                           planned_date=dt.date(2030, 1, 1), support="peer", status="requested",
                           business_status="information-given", consent_to_reminders=True, contact_ciphertext=SEALED)


@pytest.fixture
def referrals_outbox(store):
    """The referrals service's outbox on the store's database (it produces referral.created)."""
    settings = ServiceSettings(redis_key_prefix=store.prefix)
    outbox = Outbox(store.outbox.table, make_celery("referrals", settings), producer="referrals",
                    signing_keys=settings.referrals_event_keys)
    outbox.relay_after_commit(store.factory)
    return outbox


def sealed_by_subscriber(store) -> dict[str, str | None]:
    t = store.outbox.table
    with store.factory() as session:
        return {r.subscriber: r.body["payload"]["contact_ciphertext"]
                for r in session.execute(select(t.c.subscriber, t.c.body))}


def test_the_sealed_contact_goes_to_notifications_only(store, referrals_outbox):
    with transaction(store.factory) as session:
        referrals_outbox.record(session, "referral.created", referral_created())
    assert sealed_by_subscriber(store) == {"notifications": SEALED, "directory": None}
    [to_notifications] = store.queued("notifications.events")
    [to_directory] = store.queued("directory.events")
    assert to_notifications["args"][0]["payload"]["contact_ciphertext"] == SEALED
    assert to_directory["args"][0]["payload"]["contact_ciphertext"] is None
    assert SEALED not in to_directory["raw"]
    # Each copy is signed for what it carries.
    keys = ServiceSettings().event_keys()
    for message, consumer in ((to_notifications, "notifications"), (to_directory, "directory")):
        assert refusal(message["args"][0], consumer=consumer, keys_of=keys) is None


def test_a_confirmed_event_loses_its_sealed_contact(store, referrals_outbox):
    with transaction(store.factory) as session:
        evt = referrals_outbox.record(session, "referral.created", referral_created())
    _age_relayed_rows(store, dt.timedelta(minutes=2))
    confirm = lambda: referrals_outbox.confirm(store.factory, store.redis, prefix=store.prefix,  # noqa: E731
                                               resend_after=dt.timedelta(minutes=4))
    assert confirm() == {"confirmed": 0, "resent": 0}
    assert sealed_by_subscriber(store)["notifications"] == SEALED  # not yet delivered: kept for a resend
    receipt_commands(store.redis, store.prefix, "notifications", evt.event_id)
    assert confirm() == {"confirmed": 1, "resent": 0}
    assert sealed_by_subscriber(store) == {"notifications": None, "directory": None}


def test_erasing_a_referral_clears_its_sealed_contact_at_once_and_a_resend_stays_authentic(store, referrals_outbox):
    erased, other = uuid.uuid4(), uuid.uuid4()
    with transaction(store.factory) as session:
        referrals_outbox.record(session, "referral.created", referral_created(erased))
        referrals_outbox.record(session, "referral.created", referral_created(other))
    with pytest.raises(RuntimeError):  # rolled back with the change that erased: nothing cleared
        with transaction(store.factory) as session:
            referrals_outbox.erase_personal(session, referral_ids=[erased])
            raise RuntimeError("the erasure failed")
    with transaction(store.factory) as session:
        assert referrals_outbox.erase_personal(session, referral_ids=[erased]) == 1
    t = store.outbox.table
    with store.factory() as session:
        rows = {(r.body["payload"]["referral_id"], r.subscriber): r.body
                for r in session.execute(select(t.c.body, t.c.subscriber))}
    assert rows[(str(erased), "notifications")]["payload"]["contact_ciphertext"] is None
    assert rows[(str(other), "notifications")]["payload"]["contact_ciphertext"] == SEALED
    keys = ServiceSettings().event_keys()
    assert refusal(rows[(str(erased), "notifications")], consumer="notifications", keys_of=keys) is None


def test_delivered_rows_and_old_inbox_rows_are_pruned_after_their_retention(store):
    with transaction(store.factory) as session:
        store.outbox.record(session, "meeting.published", meeting())
    t = store.outbox.table
    now = dt.datetime.now(dt.UTC)
    with transaction(store.factory) as session:  # referrals confirmed 8 days ago, notifications never
        session.execute(t.update().where(t.c.subscriber == "referrals").values(confirmed_at=now - dt.timedelta(days=8)))
    assert store.outbox.prune(store.factory, retention=dt.timedelta(days=9)) == 0
    assert store.outbox.prune(store.factory, retention=dt.timedelta(days=7)) == 1
    with store.factory() as session:
        assert [r.subscriber for r in session.execute(select(t.c.subscriber))] == ["notifications"]
    # An unconfirmed row is kept while it may still be resent (the confirm window), then goes.
    with transaction(store.factory) as session:
        session.execute(t.update().values(created_at=now - dt.timedelta(days=5)))
    assert store.outbox.prune(store.factory, retention=dt.timedelta(days=1)) == 0
    with transaction(store.factory) as session:
        session.execute(t.update().values(created_at=now - dt.timedelta(days=8)))
    assert store.outbox.prune(store.factory, retention=dt.timedelta(days=7)) == 1

    old, recent = (Event.new("meeting.published", meeting(s), producer="directory") for s in ("old", "recent"))
    with store.factory() as session:
        consume(session, store.inbox, old, {})
        consume(session, store.inbox, recent, {})
    with transaction(store.factory) as session:
        session.execute(store.inbox.update().where(store.inbox.c.event_id == old.event_id)
                        .values(processed_at=now - dt.timedelta(days=15)))
    assert prune_inbox(store.factory, store.inbox, retention=dt.timedelta(days=14)) == 1
    with store.factory() as session:
        assert list(session.scalars(select(store.inbox.c.event_id))) == [recent.event_id]


def test_the_inbox_retention_cannot_be_shorter_than_a_redelivery():
    with pytest.raises(ValueError, match="inbox_retention_days"):
        ServiceSettings(inbox_retention_days=2)


# --- Authentic events: the consumer refuses what its producer did not sign. ---

def refused_count(reason: str) -> float:
    return REGISTRY.get_sample_value("fama_events_refused_total", {"consumer": "referrals", "reason": reason}) or 0.0


def test_forged_tampered_and_misaddressed_events_are_refused_logged_and_counted(store, consumer, monkeypatch):
    genuine = bodies_of("genuine")[0]
    tampered = {**genuine, "payload": {**genuine["payload"], "slug": "tampered"}}
    unsigned = Event.new("meeting.published", meeting("unsigned"), producer="directory").model_dump(mode="json")
    wrong_key = signed(Event.new("meeting.published", meeting("wrong-key"), producer="directory"),
                       keys="an-attackers-guess")
    wrong_producer = signed(Event.new("meeting.published", meeting("from-notifications"), producer="notifications"),
                            keys=ServiceSettings().notifications_event_keys)
    not_ours = signed(Event.new("referral.created", referral_created(), producer="referrals"))
    unknown = {**genuine, "type": "meeting.deleted"}
    cases = [(tampered, "bad_signature"), (unsigned, "bad_signature"), (wrong_key, "bad_signature"),
             (wrong_producer, "wrong_producer"), (not_ours, "not_subscriber"), (unknown, "unknown_type"),
             ("not an event", "malformed")]
    before = {reason: refused_count(reason) for _, reason in cases}
    with structlog.testing.capture_logs() as logs:
        # A fresh logger: one an earlier test already used is cached with the run's real processors.
        monkeypatch.setattr(shared.inbox, "log", structlog.get_logger("shared.inbox"))
        for body, _ in cases:
            assert consumer.handle_event.run(body) is False  # returns: the message is acknowledged
        assert consumer.handle_events.run([body for body, _ in cases]) == 0
    assert things_and_inbox(store) == ([], set())  # no effect, no inbox row
    for reason in {reason for _, reason in cases}:
        expected = 2 * sum(1 for _, r in cases if r == reason)
        assert refused_count(reason) - before[reason] == expected, reason
    refusals = [entry for entry in logs if entry["event"] == "event.refused"]
    assert len(refusals) == 2 * len(cases)
    assert all("payload" not in entry and "tampered" not in str(entry) for entry in refusals)
    # The genuine one still goes through.
    assert consumer.handle_event.run(genuine) is True
    assert things_and_inbox(store)[0] == ["genuine"]


def test_an_event_signed_with_the_previous_key_is_accepted_while_that_key_is_listed(store):
    new_key, old_key = "directory-key-2026-12", "directory-key-2026-06"
    old_signed = signed(Event.new("meeting.published", meeting("old-key"), producer="directory"), keys=old_key)
    rotated = ServiceSettings(directory_event_keys=f"{new_key},{old_key}")
    assert refusal(old_signed, consumer="referrals", keys_of=rotated.event_keys()) is None
    # The producer now signs with the new key, which consumers still on the old list refuse.
    new_signed = sign(old_signed, rotated.directory_event_keys)
    assert refusal(new_signed, consumer="referrals", keys_of=rotated.event_keys()) is None
    assert refusal(new_signed, consumer="referrals", keys_of={"directory": old_key}) == "bad_signature"
    # Once the old key is dropped, what it signed is refused.
    assert refusal(old_signed, consumer="referrals", keys_of={"directory": new_key}) == "bad_signature"
