"""The public Meeting Guide feed as other finders read it: from any origin, and only again when it changed."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime

import pytest
from fastapi.testclient import TestClient

from services.directory import service
from services.directory.api import app
from services.directory.runtime import runtime
from services.directory.schemas import MeetingIn
from tests.services.directory.helpers import meeting

pytestmark = pytest.mark.usefixtures("clean_state")
client = TestClient(app)
FEED = "/feeds/meeting-guide.json"


def add(**fields) -> None:
    with runtime.transaction() as session:
        service.create_meeting(session, meeting_in=MeetingIn(**meeting(**fields)))


def test_any_site_may_read_the_feed():
    add()
    response = client.get(FEED, headers={"Origin": "https://tsml-ui.example.org"})
    assert response.status_code == 200 and response.json()[0]["slug"] == "croydon-smart-tuesday"
    assert response.headers["access-control-allow-origin"] == "*"
    assert "ETag" in response.headers["access-control-expose-headers"]
    preflight = client.options(FEED, headers={"Origin": "https://tsml-ui.example.org",
                                              "Access-Control-Request-Method": "GET",
                                              "Access-Control-Request-Headers": "if-none-match"})
    assert preflight.status_code == 204 and preflight.headers["access-control-allow-origin"] == "*"
    assert "If-None-Match" in preflight.headers["access-control-allow-headers"]
    # Only the feed: the API's other answers are for this origin alone.
    assert "access-control-allow-origin" not in client.get("/meetings", headers={"Origin": "https://x.example"}).headers


def test_an_unchanged_feed_is_answered_304_by_etag_and_by_date():
    add()
    first = client.get(FEED)
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    assert etag.startswith('"') and parsedate_to_datetime(modified).tzinfo is not None
    again = client.get(FEED, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    assert client.get(FEED, headers={"If-None-Match": f'"other", W/{etag}'}).status_code == 304
    assert client.get(FEED, headers={"If-Modified-Since": modified}).status_code == 304
    assert client.get(FEED, headers={"If-Modified-Since": "not a date"}).status_code == 200
    assert client.get(FEED, headers={"If-None-Match": '"stale"', "If-Modified-Since": modified}).status_code == 200

    time.sleep(1.1)  # Last-Modified counts whole seconds
    add(slug="another", name="Another meeting")
    changed = client.get(FEED, headers={"If-None-Match": etag})
    assert changed.status_code == 200 and len(changed.json()) == 2 and changed.headers["etag"] != etag
    assert client.get(FEED, headers={"If-Modified-Since": modified}).status_code == 200

    time.sleep(1.1)
    with runtime.transaction() as session:
        service.withdraw_meeting(session, slug="another", reason="closed")
    after = client.get(FEED, headers={"If-None-Match": changed.headers["etag"],
                                      "If-Modified-Since": changed.headers["last-modified"]})
    assert after.status_code == 200 and len(after.json()) == 1
    assert client.get(FEED, headers={"If-Modified-Since": changed.headers["last-modified"]}).status_code == 200


def test_a_reimport_that_changes_nothing_keeps_the_feed_at_304_and_one_change_of_any_field_does_not():
    from services.directory import feeds

    rows = [{"slug": "kendal-aa", "name": "Kendal AA", "day": 1, "time": "19:30", "latitude": 54.326,
             "longitude": -2.745, "formatted_address": "Friends Meeting House, Stramongate, Kendal LA9, UK",
             "regions": ["North West", "Kendal"], "updated": "2026-01-05 10:00:00"}]

    def import_rows(feed):
        with runtime.transaction() as session:
            return feeds.import_feed(session, rows=feed, source="kendal")

    import_rows(rows)
    first = client.get(FEED, headers={"Origin": "https://tsml-ui.example.org"})
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    time.sleep(1.1)  # a change now would be a second later
    assert import_rows(rows).unchanged == 1
    again = client.get(FEED, headers={"If-None-Match": etag, "Origin": "https://tsml-ui.example.org"})
    assert again.status_code == 304 and again.headers["last-modified"] == modified
    assert again.headers["access-control-allow-origin"] == "*"  # a cross-origin reader may read the 304 too
    assert client.get(FEED, headers={"If-Modified-Since": modified}).status_code == 304

    moved = [{**rows[0], "regions": ["North West", "South Lakeland"]}]  # a field only the feed carries
    assert import_rows(moved).updated == 1
    changed = client.get(FEED, headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    assert changed.json()[0]["regions"] == ["North West", "South Lakeland"]
    assert client.get(FEED, headers={"If-Modified-Since": modified}).status_code == 200
