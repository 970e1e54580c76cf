"""shared/metrics.py's pure parts: the refusal reasons it shows from 0, the Redis lists of a queue."""

from __future__ import annotations

import uuid

from shared.events import Event, MeetingSnapshot, refusal, sign
from shared.metrics import REFUSAL_REASONS, Cached, queue_keys
from shared.settings import DEV_EVENT_KEYS

MEETING = MeetingSnapshot(slug="s", name="n", fellowship="aa", day=1, time="19:00", timezone="Europe/London")


def test_every_reason_a_consumer_can_refuse_for_is_shown_from_zero():
    body = Event.new("meeting.published", MEETING, producer="directory").model_dump(mode="json")
    keys = dict(DEV_EVENT_KEYS)
    found = {
        refusal("not an event", consumer="referrals", keys_of=keys),
        refusal({**body, "type": "meeting.exploded"}, consumer="referrals", keys_of=keys),
        refusal(sign(body, keys["directory"]), consumer="directory", keys_of=keys),
        refusal({**sign(body, keys["directory"]), "producer": "referrals"}, consumer="referrals", keys_of=keys),
        refusal({**sign(body, keys["directory"]), "event_id": str(uuid.uuid4())}, consumer="referrals", keys_of=keys),
    }
    assert found == set(REFUSAL_REASONS)


def test_a_queue_is_its_list_and_one_list_per_priority_step_under_the_key_prefix():
    keys = queue_keys("fama:", "notifications.send")
    assert keys[0] == "fama:notifications.send"
    assert len(keys) == 4 and all(k.startswith("fama:notifications.send") for k in keys)


def test_a_cached_collector_computes_once_however_often_it_is_scraped():
    calls = []
    cached = Cached(lambda: calls.append(1) or [])
    for _ in range(5):
        list(cached.collect())
    assert len(calls) == 1
