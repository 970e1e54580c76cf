"""Feed sources: re-imported by the real directory scheduler on their schedule; a feed that suddenly
loses most of its meetings is held (nothing withdrawn) until an admin confirms or discards it; bad
sources and a feed URL that never answers get a clear 4xx and change nothing."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from services.directory import feed_sources
from services.directory.api import app
from services.directory.config import get_settings
from services.directory.models import FeedSource, ImportRun, Meeting
from services.directory.runtime import runtime
from tests.services.directory.helpers import FEEDS, outbox_events
from tests.support.auth import auth
from tests.support.broker import event_bodies, queued_messages
from tests.support.processes import scheduler, wait_for

pytestmark = pytest.mark.usefixtures("clean_state")
client = TestClient(app)
ADMIN = auth("admin")


@pytest.fixture
def local_feeds(tmp_path, monkeypatch):
    """A feed server on 127.0.0.1 serving tmp_path, which the directory may reach for this test."""
    monkeypatch.setenv("DIRECTORY_FEED_ALLOW_NETWORKS", "127.0.0.0/8")
    monkeypatch.setenv("DIRECTORY_FEED_FETCH_TIMEOUT", "2")
    get_settings.cache_clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def publish(rows: list) -> str:
        (tmp_path / "feed.json").write_text(json.dumps(rows))
        return f"http://127.0.0.1:{server.server_address[1]}/feed.json"

    yield publish
    server.shutdown()
    get_settings.cache_clear()


def load(name: str) -> list[dict]:
    return json.loads((FEEDS / f"{name}.json").read_text())


def live(source: str) -> int:
    with runtime.sessions() as session:
        return session.scalar(select(func.count()).select_from(Meeting)
                              .where(Meeting.source == source, Meeting.active.is_(True)))


def runs(source: str) -> list[ImportRun]:
    with runtime.sessions() as session:
        return list(session.scalars(select(ImportRun).where(ImportRun.source_id == source).order_by(ImportRun.id)))


def make_due(source: str) -> None:
    with runtime.transaction() as session:
        session.execute(update(FeedSource).where(FeedSource.id == source)
                        .values(next_run_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)))


def test_the_scheduler_reimports_a_source_when_it_is_due(local_feeds):
    rows = load("atlanta")
    url = local_feeds(rows)
    created = client.post("/feed-sources", json={"id": "atlanta", "url": url, "fellowship": "aa",
                                                 "timezone": "America/New_York", "every_hours": 6}, headers=ADMIN)
    assert created.status_code == 201, created.text
    env = {**os.environ, "DIRECTORY_FEED_ALLOW_NETWORKS": "127.0.0.0/8", "DIRECTORY_FEED_CHECK_SECONDS": "0.3"}
    proc = scheduler("directory", env=env).start()
    try:
        wait_for(lambda: live("atlanta") == 6, timeout=30, what="the first scheduled import")
        first = runs("atlanta")
        assert [(r.trigger, r.status, r.report["created"]) for r in first] == [("schedule", "applied", 6)]
        with runtime.sessions() as session:  # the next one is six hours on
            next_run = session.get(FeedSource, "atlanta").next_run_at
        assert dt.timedelta(hours=5.9) < next_run - dt.datetime.now(dt.UTC) <= dt.timedelta(hours=6)

        rows[0]["name"] = "Renamed by the group"
        local_feeds(rows)
        make_due("atlanta")
        wait_for(lambda: len(runs("atlanta")) == 2, timeout=30, what="the second scheduled import")
    finally:
        proc.stop()
    second = runs("atlanta")[1].report
    assert (second["updated"], second["unchanged"], second["withdrawn"]) == (1, 5, 0)
    with runtime.sessions() as session:
        assert session.scalar(select(Meeting.name).where(Meeting.slug == rows[0]["slug"])) == "Renamed by the group"


def test_a_feed_that_loses_most_meetings_is_held_until_an_admin_decides(local_feeds, redis_client, redis_prefix):
    def withdrawals_sent() -> int:  # to the referrals replica (no worker takes them here)
        return sum(body["type"] == "meeting.withdrawn" for message in
                   queued_messages(redis_client, redis_prefix, "referrals.events") for body in event_bodies(message))

    rows = load("sussexaa")
    url = local_feeds(rows)
    assert client.post("/feed-sources", json={"id": "sussex", "url": url, "every_hours": 24,
                                                "timezone": "America/New_York"},
                       headers=ADMIN).status_code == 201
    first = client.post("/feed-sources/sussex/import", headers=ADMIN)
    assert first.status_code == 200 and first.json()["status"] == "applied"
    assert live("sussex") == 123
    withdrawn_before = sum(1 for kind, _ in outbox_events() if kind == "meeting.withdrawn")

    local_feeds(rows[:10])  # a broken export: 113 meetings gone at once
    make_due("sussex")
    assert feed_sources.run_due() == {"sussex": "held"}
    held = runs("sussex")[-1]
    assert (held.status, held.live_before, held.report["withdrawn"]) == ("held", 123, 113)
    assert live("sussex") == 123  # nothing withdrawn
    assert sum(1 for kind, _ in outbox_events() if kind == "meeting.withdrawn") == withdrawn_before
    assert withdrawals_sent() == 0  # nor any withdrawal sent: they were rolled back with the import
    make_due("sussex")
    assert feed_sources.run_due() is None  # the source waits for the decision
    assert len(runs("sussex")) == 2

    assert client.post(f"/import-runs/{held.id}/discard", headers=auth("site_lead", "croydon")).status_code == 403
    discarded = client.post(f"/import-runs/{held.id}/discard", headers=ADMIN)
    assert discarded.json()["status"] == "discarded" and discarded.json()["decided_by"] == "dev-user"
    assert live("sussex") == 123
    assert client.post(f"/import-runs/{held.id}/confirm", headers=ADMIN).status_code == 409

    again = client.post("/feed-sources/sussex/import", headers=ADMIN).json()
    assert again["status"] == "held"
    confirmed = client.post(f"/import-runs/{again['id']}/confirm", headers=ADMIN)
    assert confirmed.status_code == 200 and confirmed.json()["status"] == "confirmed"
    assert live("sussex") == 10
    assert sum(1 for kind, _ in outbox_events() if kind == "meeting.withdrawn") == withdrawn_before + 113
    assert withdrawals_sent() == 113
    assert runs("sussex")[-1].held_rows is None


def test_bad_sources_and_a_feed_that_never_answers_change_nothing(local_feeds):
    def refused(body: dict, status: int, words: str) -> None:
        response = client.post("/feed-sources", json=body, headers=ADMIN)
        assert response.status_code == status, response.text
        assert words in response.json()["detail"]

    refused({"id": "x", "timezone": "Nowhere/Else"}, 422, "timezone")
    refused({"id": "x", "every_hours": 6}, 422, "every_hours")
    refused({"id": "x", "url": "ftp://example.org/feed.json"}, 422, "url")
    refused({"id": "bad name!"}, 422, "id")
    assert client.post("/feed-sources", json={"id": "x"}, headers=auth("keyworker", "croydon")).status_code == 403

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(5)  # accepts connections and never answers
    try:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/feed.json"
        assert client.post("/feed-sources", json={"id": "silent", "url": url}, headers=ADMIN).status_code == 201
        refused({"id": "silent"}, 409, "already a feed source")
        response = client.post("/feed-sources/silent/import", headers=ADMIN)
    finally:
        silent.close()
    assert response.status_code == 422
    assert "longer than the time allowed" in response.json()["detail"]
    assert "Nothing was changed" in response.json()["detail"]
    assert [(r.status, r.trigger) for r in runs("silent")] == [("failed", "admin")]
    assert live("silent") == 0
    upload = client.post("/feed-sources/silent/import", content=b"{not json", headers=ADMIN)
    assert upload.status_code == 422
