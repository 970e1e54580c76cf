"""The outbox and inbox on SQLite and Postgres, against the real Redis broker."""

from __future__ import annotations

import datetime as dt
import uuid
from types import SimpleNamespace

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, func, select

from shared.celery_app import make_celery
from shared.db import make_engine, make_sessionmaker, transaction
from shared.events import Event, MeetingSnapshot
from shared.inbox import consume, inbox_table
from shared.outbox import Outbox, leave_receipt, outbox_table
from shared.settings import ServiceSettings
from tests.support.broker import queued_messages
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
    outbox = Outbox(outbox_t, make_celery("directory", settings), producer="directory")
    factory = make_sessionmaker(engine)
    outbox.relay_after_commit(factory)

    yield SimpleNamespace(engine=engine, factory=factory, outbox=outbox, things=things, inbox=inbox_t,
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


def test_relay_that_dies_between_commit_and_send_loses_nothing(store):
    # A session without the after-commit relay stands for a process killed right after commit.
    bare = make_sessionmaker(store.engine)
    with transaction(bare) as session:
        store.outbox.record(session, "meeting.updated", meeting())
    assert store.queued("referrals.events") == []
    with store.factory() as session:
        assert store.outbox.unrelayed(session) == 2
    assert store.outbox.sweep(store.factory, older_than=dt.timedelta(0)) == 2
    assert len(store.queued("referrals.events")) == 1
    assert len(store.queued("notifications.events")) == 1
    assert store.outbox.sweep(store.factory, older_than=dt.timedelta(0)) == 0


def test_send_failure_keeps_the_row_for_the_sweep(store):
    def broker_down(subscriber, body):
        raise ConnectionError("redis unavailable")

    real_send = store.outbox.send
    store.outbox.send = broker_down
    with transaction(store.factory) as session:
        store.outbox.record(session, "meeting.published", meeting())
    with store.factory() as session:
        assert store.outbox.unrelayed(session) == 2
    store.outbox.send = real_send
    assert store.outbox.sweep(store.factory, older_than=dt.timedelta(0)) == 2
    assert len(store.queued("notifications.events")) == 1


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
    leave_receipt(store.redis, store.prefix, "notifications", evt.event_id)  # notifications processed it

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
    leave_receipt(store.redis, store.prefix, "referrals", evt.event_id)
    _age_relayed_rows(store, dt.timedelta(minutes=10))
    assert confirm() == {"confirmed": 1, "resent": 0}
    t = store.outbox.table
    with store.factory() as session:
        assert session.scalar(select(func.count()).select_from(t).where(t.c.confirmed_at.is_(None))) == 0
    assert len(store.queued("referrals.events")) == 1
