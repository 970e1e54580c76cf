"""Public answers kept (services/directory/answers.py): served again only while
nothing they show has changed, whichever process changed it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from services.directory.api import app
from tests.services.directory.helpers import meeting
from tests.support.auth import auth

pytestmark = pytest.mark.usefixtures("clean_state")
client = TestClient(app)
ADMIN = auth("admin")
ROOT = Path(__file__).resolve().parents[3]
SEARCH = {"near": "CR0", "radius_km": 10}


def kept(answer: str) -> float:
    text = client.get("/metrics").text
    found = re.search(rf'^fama_directory_public_answers_total\{{kept="{answer}"\}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def well_inside_a_minute() -> None:
    """An answer may turn at the next minute (a meeting starts): start a test's requests early in one."""
    if time.time() % 60 > 45:
        time.sleep(61 - time.time() % 60)


def slugs(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [m["slug"] for m in response.json()["results"]]


def test_the_same_search_in_the_same_minute_is_answered_from_what_was_kept():
    assert client.post("/meetings", json=meeting(), headers=ADMIN).status_code == 201
    well_inside_a_minute()
    first = client.get("/meetings", params=SEARCH)
    before = kept("yes"), kept("no")
    again = client.get("/meetings", params=SEARCH)
    assert again.content == first.content
    assert again.headers["content-type"] == "application/json"
    assert (kept("yes"), kept("no")) == (before[0] + 1, before[1])
    # Another search is made afresh.
    assert slugs(client.get("/meetings", params={**SEARCH, "day": 2})) == ["croydon-smart-tuesday"]
    assert kept("no") == before[1] + 1


def test_a_meeting_added_or_changed_here_shows_in_the_next_answer():
    assert client.post("/meetings", json=meeting(), headers=ADMIN).status_code == 201
    well_inside_a_minute()
    assert slugs(client.get("/meetings", params=SEARCH)) == ["croydon-smart-tuesday"]
    assert client.get("/meetings/croydon-smart-tuesday").json()["time"] == "14:00"
    assert client.post("/meetings", json=meeting(slug="croydon-aa-friday", fellowship="aa", day=5),
                       headers=ADMIN).status_code == 201
    assert client.patch("/meetings/croydon-smart-tuesday", json={"time": "18:00"}, headers=ADMIN).status_code == 200
    assert sorted(slugs(client.get("/meetings", params=SEARCH))) == ["croydon-aa-friday", "croydon-smart-tuesday"]
    assert client.get("/meetings/croydon-smart-tuesday").json()["time"] == "18:00"


def test_a_meeting_withdrawn_by_another_process_is_gone_from_the_next_answer():
    assert client.post("/meetings", json=meeting(), headers=ADMIN).status_code == 201
    well_inside_a_minute()
    assert slugs(client.get("/meetings", params=SEARCH)) == ["croydon-smart-tuesday"]
    assert client.get("/meetings/croydon-smart-tuesday").json()["active"] is True
    # Another API process (or the CLI) withdraws it: this process's own counter does not move.
    withdraw = ("from services.directory import service\n"
                "from services.directory.runtime import runtime\n"
                "with runtime.transaction() as session:\n"
                "    service.withdraw_meeting(session, slug='croydon-smart-tuesday', reason='venue closed')\n")
    subprocess.run([sys.executable, "-c", withdraw], cwd=ROOT, env=dict(os.environ), check=True, timeout=120)
    assert slugs(client.get("/meetings", params=SEARCH)) == []
    assert client.get("/meetings/croydon-smart-tuesday").json()["active"] is False


def test_a_meeting_changed_by_another_process_shows_in_a_new_search_not_as_another_search_showed_it():
    """Each meeting as a search showed it is kept for other searches (api._results_shown): under the
    same mark as the answers, so another process's change is never served from it."""
    assert client.post("/meetings", json=meeting(), headers=ADMIN).status_code == 201
    well_inside_a_minute()
    [shown] = client.get("/meetings", params=SEARCH).json()["results"]
    assert shown["name"] == "SMART Recovery Croydon" and shown["distance_km"] is not None
    rename = ("from services.directory import service\n"
              "from services.directory.runtime import runtime\n"
              "from services.directory.schemas import MeetingIn\n"
              "with runtime.transaction() as session:\n"
              "    meeting = service.get_meeting(session, 'croydon-smart-tuesday')\n"
              "    changed = {**service.meeting_in_of(meeting), 'name': 'SMART Recovery at the Hub'}\n"
              "    service.update_meeting(session, slug='croydon-smart-tuesday', meeting_in=MeetingIn(**changed), by='t')\n")
    subprocess.run([sys.executable, "-c", rename], cwd=ROOT, env=dict(os.environ), check=True, timeout=120)
    for other in ({**SEARCH, "day": 2}, {"near": "CR0 1AB", "radius_km": 3}, {"sort": "soonest"}):
        [result] = client.get("/meetings", params=other).json()["results"]
        assert result["name"] == "SMART Recovery at the Hub", other


def test_a_kept_answer_is_still_counted_against_the_public_rate_limit(monkeypatch):
    """Kept answers are sent before FastAPI reads the parameters: the per-address limit, the
    security headers and the request metrics must hold for them as for any answer."""
    assert client.post("/meetings", json=meeting(), headers=ADMIN).status_code == 201
    well_inside_a_minute()
    monkeypatch.setattr(app.state.settings, "public_rate_limit_per_minute", 3)
    requests = ("/meetings?near=CR0&radius_km=10", "/meetings/croydon-smart-tuesday")
    # A different client address each time, so another test's counts in this minute do not matter.
    limited = TestClient(app, client=("198.51.100.7", 50000))
    statuses = [limited.get(requests[i % 2]).status_code for i in range(5)]
    assert statuses == [200, 200, 200, 429, 429]  # the second search and meeting were kept answers
    refused = limited.get(requests[0])
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) in range(1, 61)
    assert "at most 3 a minute" in refused.json()["detail"]
    assert TestClient(app, client=("198.51.100.8", 50000)).get(requests[0]).status_code == 200


def test_a_kept_answer_has_the_headers_and_metrics_of_a_made_one():
    assert client.post("/meetings", json=meeting(), headers=ADMIN).status_code == 201
    well_inside_a_minute()
    made = client.get("/meetings/croydon-smart-tuesday")
    before = kept("yes")
    again = client.get("/meetings/croydon-smart-tuesday")
    assert kept("yes") == before + 1 and again.content == made.content
    for header in ("x-content-type-options", "content-security-policy", "referrer-policy", "content-type"):
        assert again.headers[header] == made.headers[header], header
    metrics = client.get("/metrics").text
    found = re.search(r'^http_requests_total\{method="GET",route="/meetings/\{slug\}",status="200"\} (\S+)$',
                      metrics, re.M)
    assert found and float(found.group(1)) >= 2


def test_a_refused_query_is_refused_every_time_never_kept():
    assert client.post("/meetings", json=meeting(), headers=ADMIN).status_code == 201
    well_inside_a_minute()
    for query in ("near=CR0&radius_km=10&fellowhsip=aa", "near=CR0&radius_km=900", "near=CR0&types=NOPE"):
        first, again = client.get(f"/meetings?{query}"), client.get(f"/meetings?{query}")
        assert first.status_code == again.status_code == 422, query
        assert again.json() == first.json()
    assert client.get("/meetings/no-such-meeting").status_code == 404
    assert client.get("/meetings/no-such-meeting").status_code == 404


def test_searches_asked_once_never_push_a_kept_meeting_out():
    """Searches and meetings are kept apart: a keyworker typing postcode after postcode fills the
    searches' share, never the meetings'."""
    from services.directory import answers

    assert client.post("/meetings", json=meeting(), headers=ADMIN).status_code == 201
    well_inside_a_minute()
    made = client.get("/meetings/croydon-smart-tuesday")
    for i in range(answers.SEARCH_BYTES // 50_000 + 10):  # more than the searches' share holds
        answers.searches.put(f"/meetings?near=X{i}", ("any",), 2**40, b" " * 50_000, minute=0)
    assert answers.searches.size <= answers.SEARCH_BYTES
    before = kept("yes")
    assert client.get("/meetings/croydon-smart-tuesday").content == made.content
    assert kept("yes") == before + 1


def test_a_flood_of_searches_asked_once_leaves_the_popular_ones_kept():
    from services.directory.answers import Answers

    kept, stamp = Answers(10_000, max_asked=1_000), ("s",)
    for i in range(10):  # ten popular answers fill it
        assert kept.put(f"popular-{i}", stamp, 100, b"p" * 1_000, minute=1)
        for _ in range(20):
            assert kept.get(f"popular-{i}", stamp, 1) is not None
    for i in range(500):  # then five hundred different searches, each asked once
        assert not kept.put(f"once-{i}", stamp, 100, b"o" * 1_000, minute=2)
    assert all(kept.get(f"popular-{i}", stamp, 2) for i in range(10))
    assert kept.size <= 10_000
    # Asked as often as the least popular (22 times), a newcomer still is not kept; more often, it is.
    for _ in range(22):
        assert not kept.put("rising", stamp, 100, b"r" * 1_000, minute=3)
    assert kept.put("rising", stamp, 100, b"r" * 1_000, minute=3)
    assert kept.get("rising", stamp, 3) is not None and kept.size <= 10_000


def test_what_can_no_longer_be_served_makes_room_whatever_its_count():
    from services.directory.answers import Answers

    kept = Answers(3_000)
    for i in range(3):
        kept.put(f"old-{i}", ("before",), 100, b"x" * 1_000, minute=1)
        for _ in range(50):
            kept.get(f"old-{i}", ("before",), 1)
    assert kept.put("after a change", ("after",), 100, b"y" * 1_000, minute=2)  # another stamp
    kept.put("short", ("after",), 3, b"z" * 1_000, minute=2)
    assert kept.put("later", ("after",), 100, b"w" * 1_000, minute=5)  # "short" was kept to minute 3
    assert kept.get("after a change", ("after",), 5) and kept.get("later", ("after",), 5)


def test_counts_age_so_yesterdays_popular_answers_give_way():
    from services.directory.answers import Answers

    kept, stamp = Answers(2_000, max_asked=10), ("s",)
    for key in ("a", "b"):
        kept.put(key, stamp, 100, b"x" * 1_000, minute=1)
        for _ in range(40):
            kept.get(key, stamp, 1)
    admitted = False
    for round_ in range(12):  # many searches asked now and then: the counts halve each time the tally fills
        for i in range(11):
            kept.put(f"other-{round_}-{i}", stamp, 100, b"o" * 1_000, minute=2)
        for _ in range(3):
            admitted = kept.put("today", stamp, 100, b"t" * 1_000, minute=2) or admitted
    assert admitted and kept.get("today", stamp, 2) is not None


def test_a_change_after_redis_lost_its_data_is_never_mistaken_for_an_old_one(redis_client):
    """The change mark is a value never used before, not a counter: a counter would start again
    after Redis lost its data, and an answer kept under the old count would be served again."""
    from services.directory import answers

    assert client.post("/meetings", json=meeting(), headers=ADMIN).status_code == 201
    well_inside_a_minute()
    assert slugs(client.get("/meetings", params=SEARCH)) == ["croydon-smart-tuesday"]
    redis_client.delete(answers.version_key())  # Redis restarted without its data
    add = ("from services.directory import service\n"
           "from services.directory.runtime import runtime\n"
           "from services.directory.schemas import MeetingIn\n"
           "from tests.services.directory.helpers import meeting\n"
           "with runtime.transaction() as session:\n"
           "    service.create_meeting(session, meeting_in=MeetingIn(**meeting(slug='croydon-aa-friday', "
           "fellowship='aa', day=5)), by='another process')\n")
    subprocess.run([sys.executable, "-c", add], cwd=ROOT, env=dict(os.environ), check=True, timeout=120)
    assert sorted(slugs(client.get("/meetings", params=SEARCH))) == ["croydon-aa-friday", "croydon-smart-tuesday"]


def test_threads_keeping_and_reading_at_once_never_fail_nor_lose_count_of_the_size():
    """The results are kept from the endpoints' worker threads, several at a time (api._results_shown):
    a full store making room while another thread reads it must neither raise (an OrderedDict changed
    while it is walked) nor lose count of what it holds (its limit would drift)."""
    import random
    import threading

    from services.directory.answers import Answers

    store, failures, stamp = Answers(200_000), [], ("s",)
    interval = sys.getswitchinterval()

    def keyworkers(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(20_000):
                key = rng.randrange(3_000)
                if store.get(key, stamp, 0) is None:
                    store.put(key, stamp, 10, b"x" * rng.randrange(100, 400), minute=0)
        except Exception as exc:  # noqa: BLE001 (what a request would have answered 500 with)
            failures.append(repr(exc))

    sys.setswitchinterval(1e-6)  # threads switch as often as they can
    try:
        threads = [threading.Thread(target=keyworkers, args=(seed,)) for seed in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert failures == []
    assert store.size == sum(len(entry[2]) for entry in store.kept.values()) <= store.max_bytes


def test_public_answers_are_made_in_their_own_few_threads_and_never_hold_up_other_endpoints(monkeypatch):
    """At most PUBLIC_ANSWER_THREADS public answers are made at once in a process (more only fight
    over the interpreter lock); the rest wait their turn, while the other endpoints keep their own
    threads: a keyworker's desk is not held up by a burst of public searches."""
    import asyncio
    import concurrent.futures
    import threading

    import httpx

    from services.directory import api

    assert client.post("/meetings", json=meeting(), headers=ADMIN).status_code == 201
    making, most, lock, made = 0, 0, threading.Lock(), api._search_page

    def slow_search_page(**search):
        nonlocal making, most
        with lock:
            making += 1
            most = max(most, making)
        try:
            time.sleep(0.5)  # a search held up by a slow database
            return made(**search)
        finally:
            with lock:
                making -= 1

    monkeypatch.setattr(api, "_search_page", slow_search_page)

    async def burst() -> list[str]:
        done: list[str] = []
        transport = httpx.ASGITransport(app=app, client=("192.0.2.10", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://fama.test") as http:
            async def search(radius: int):
                response = await http.get("/meetings", params={"near": "CR0", "radius_km": radius})
                assert response.status_code == 200 and slugs(response) == ["croydon-smart-tuesday"]
                done.append("search")

            async def desk():
                await asyncio.sleep(0.1)  # while the searches are being made
                response = await http.get("/sites", headers=ADMIN)
                assert response.status_code == 200
                done.append("desk")
            await asyncio.gather(*(search(radius) for radius in range(5, 11)), desk())
        return done

    # its own thread for its own loop: a session fixture may keep one running in this one (Playwright's sync API)
    with concurrent.futures.ThreadPoolExecutor(1) as loop_thread:
        done = loop_thread.submit(asyncio.run, burst()).result(timeout=60)
    assert most == api.PUBLIC_ANSWER_THREADS  # six searches asked at once, two made at a time
    assert done.index("desk") < 4 and done.count("search") == 6  # the desk answered before most of them


def test_a_process_starts_with_each_live_meeting_made_as_searches_show_it():
    """A process's first searches after a start or a deploy do not each compute their results: the
    warm-up (api._warm_up, run before the first request) made them, under the stamp requests read."""
    from services.directory import answers
    from services.directory.models import Meeting
    from services.directory.runtime import runtime

    far = meeting(slug="newcastle-na", fellowship="na", postcode="NE1 4ST", latitude=54.97, longitude=-1.61)
    for body in (meeting(), far, meeting(slug="croydon-aa-friday", fellowship="aa", day=5)):
        assert client.post("/meetings", json=body, headers=ADMIN).status_code == 201
    withdraw = client.post("/meetings/croydon-aa-friday/withdraw", json={"reason": "closed"}, headers=ADMIN)
    assert withdraw.status_code == 200
    well_inside_a_minute()
    with TestClient(app) as started:  # runs the lifespan, as uvicorn does
        stamp, minute = answers.current_stamp(), answers.minute_now()
        with runtime.reads() as session:
            ids = dict(session.execute(select(Meeting.slug, Meeting.id)).all())
        for live in ("croydon-smart-tuesday", "newcastle-na"):  # the latter far from any search it made
            assert answers.results.get((ids[live], None), stamp, minute) is not None, live
        assert answers.results.get((ids["croydon-aa-friday"], None), stamp, minute) is None  # withdrawn
        assert slugs(started.get("/meetings", params=SEARCH)) == ["croydon-smart-tuesday"]
