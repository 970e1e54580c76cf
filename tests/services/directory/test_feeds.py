"""Meeting Guide feeds: the real feeds import with the right counts and fields; export round-trips."""

from __future__ import annotations

import ipaddress
import json
import threading
import time
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from services.directory import feeds
from services.directory.api import app
from services.directory.cli import app as cli
from services.directory.config import get_settings
from services.directory.models import Meeting
from services.directory.reference import TYPE_NAMES
from services.directory.runtime import runtime
from tests.services.directory.helpers import FEEDS, outbox_events
from tests.support.auth import auth

pytestmark = pytest.mark.usefixtures("clean_state")
client = TestClient(app)
ADMIN = auth("admin")


def load(name: str) -> list[dict]:
    return json.loads((FEEDS / f"{name}.json").read_text())


def import_rows(rows, source, **kw):
    """Import rows; the real feeds in the test data are all of the US east coast, so that is the default here."""
    kw.setdefault("timezone", "America/New_York")
    with runtime.transaction() as session:
        return feeds.import_feed(session, rows=rows, source=source, **kw)


def stored(source: str | None = None) -> dict[str, Meeting]:
    with runtime.sessions() as session:
        query = select(Meeting)
        if source:
            query = query.where(Meeting.source == source)
        return {m.slug: m for m in session.scalars(query)}


def live_count() -> int:
    with runtime.sessions() as session:
        return session.scalar(select(func.count()).select_from(Meeting).where(Meeting.active.is_(True)))


@pytest.mark.parametrize(("name", "count", "fellowship"), [("sussexaa", 123, "aa"), ("al-anon", 360, "al-anon"),
                                                            ("atlanta", 6, "aa")])
def test_real_feeds_import_every_meeting_with_its_fields(name, count, fellowship):
    rows = load(name)
    report = import_rows(rows, name, fellowship=fellowship, timezone="America/New_York")
    assert (report.rows, report.created, report.updated, report.rejected) == (count, count, 0, [])
    meetings = stored(name)
    assert len(meetings) == count
    for row in rows:
        m = meetings[row["slug"]]
        assert (m.name, m.day, m.time, m.fellowship, m.timezone) == (row["name"], row["day"], row["time"], fellowship,
                                                                     "America/New_York")
        assert m.end_time == row.get("end_time")
        assert (m.latitude, m.longitude) == (row["latitude"], row["longitude"])
        assert m.formatted_address == row["formatted_address"]
        assert m.attendance_option == row["attendance_option"]
        codes = list(dict.fromkeys(row["types"]))
        assert m.types == [c for c in codes if c in TYPE_NAMES]
        assert m.unknown_types == [c for c in codes if c not in TYPE_NAMES]
        assert m.location_notes == (row.get("location_notes") or None)
        assert m.conference_url == row.get("conference_url")
        assert m.group == row.get("group")
        assert m.approximate == (row["approximate"] == "yes")
    assert len([e for e in outbox_events() if e[0] == "meeting.published"]) == count


def test_unknown_type_codes_are_kept_aside_and_reported():
    report = import_rows(load("al-anon"), "al-anon", fellowship="al-anon")
    assert report.unknown_types == {"ONL": 173, "AC": 48, "LGBTQIA": 1}
    m = stored()["25037-par-ents-afg"]
    assert m.types == ["O", "POA"] and m.unknown_types == ["ONL"]


def test_reimport_leaves_unchanged_meetings_alone_and_withdraws_vanished_ones():
    rows = load("atlanta")
    import_rows(rows, "atlanta")
    first_events = len(outbox_events())
    updated_before = {s: m.updated for s, m in stored().items()}
    changed = [dict(r) for r in rows[:-1]]  # the last meeting vanished
    changed[0]["time"] = "7:30 PM"
    report = import_rows(changed, "atlanta")
    assert (report.created, report.updated, report.unchanged, report.withdrawn) == (0, 1, 4, 1)
    after = stored()
    assert after[rows[0]["slug"]].time == "19:30"
    assert not after[rows[-1]["slug"]].active and "atlanta" in after[rows[-1]["slug"]].withdrawn_reason
    assert all(after[r["slug"]].updated == updated_before[r["slug"]] for r in rows[1:-1])
    assert [k for k, _ in outbox_events()[first_events:]] == ["meeting.updated", "meeting.withdrawn"]
    # The vanished meeting coming back is published again.
    report = import_rows(rows, "atlanta")
    assert (report.updated, report.unchanged) == (2, 4)


def test_lenient_rows_and_rejections_with_row_and_reason():
    rows = [
        {"slug": "weekday", "name": "Every weekday", "day": [1, 2, "3"], "time": "7:30 PM", "formatted_address": "Hall"},
        {"slug": "noon", "name": "Noon", "day": "Friday", "time": "12:00:00", "types": "O, D, XYZ"},
        {"slug": "appointment", "name": "By appointment", "conference_url": "https://zoom.example.org/j/1"},
        {"slug": "bad-day", "name": "Bad day", "day": 7, "time": "10:00"},
        {"slug": "bad-time", "name": "Bad time", "day": 1, "time": "25:61"},
        {"name": "No slug", "day": 1, "time": "10:00"},
        "not an object",
        {"slug": "noon", "name": "Noon again", "day": 5, "time": "12:00"},
        {"slug": "no-time", "name": "No time", "day": 2},
    ]
    report = import_rows(rows, "lenient")
    assert report.created == 5 and report.rows == 9
    assert [(r.row, r.slug) for r in report.rejected] == [(4, "bad-day"), (5, "bad-time"), (6, None), (7, None),
                                                        (8, "noon"), (9, "no-time")]
    reasons = [r.reason for r in report.rejected]
    assert "out of range 0-6" in reasons[0] and "not a time of day" in reasons[1] and "slug is missing" in reasons[2]
    assert "JSON object" in reasons[3] and "appears twice" in reasons[4] and "time is missing" in reasons[5]
    meetings = stored("lenient")
    assert {s: (m.day, m.time) for s, m in meetings.items() if s.startswith("weekday")} == {
        "weekday-monday": (1, "19:30"), "weekday-tuesday": (2, "19:30"), "weekday-wednesday": (3, "19:30")}
    assert (meetings["noon"].day, meetings["noon"].time, meetings["noon"].types, meetings["noon"].unknown_types) == (
        5, "12:00", ["O", "D"], ["XYZ"])
    appointment = meetings["appointment"]
    assert (appointment.day, appointment.time, appointment.attendance_option) == (None, None, "online")


def test_invalid_json_or_not_a_list_is_refused_and_changes_nothing():
    import_rows(load("atlanta"), "atlanta")
    before = len(outbox_events())
    response = client.post("/feeds/import?source=atlanta", content=(FEEDS / "invalid.json").read_bytes(),
                           headers={**ADMIN, "Content-Type": "application/json"})
    assert response.status_code == 422 and "not valid JSON" in response.json()["detail"]
    response = client.post("/feeds/import?source=atlanta", json={"meetings": []}, headers=ADMIN)
    assert response.status_code == 422
    response = client.post("/feeds/import?source=atlanta", content=b'"a string"', headers=ADMIN)
    assert response.status_code == 422 and "JSON list" in response.json()["detail"]
    result = CliRunner().invoke(cli, ["import", str(FEEDS / "invalid.json"), "--source", "atlanta"])
    assert result.exit_code == 2 and "not valid JSON" in result.output and "Nothing was changed" in result.output
    assert live_count() == 6 and len(outbox_events()) == before


def test_api_import_of_a_body_reports_counts():
    response = client.post("/feeds/import?source=sussex&timezone=America/New_York", json=load("sussexaa"), headers=ADMIN)
    assert response.status_code == 200, response.text
    report = response.json()
    assert (report["rows"], report["created"], report["unchanged"], report["rejected"]) == (123, 123, 0, [])
    again = client.post("/feeds/import?source=sussex&timezone=America/New_York", json=load("sussexaa"), headers=ADMIN)
    assert (again.json()["created"], again.json()["unchanged"]) == (0, 123)
    assert client.post("/feeds/import?source=x&timezone=Nowhere/Else", json=[], headers=ADMIN).status_code == 422


@pytest.fixture
def feed_settings(monkeypatch):
    """Change the directory's feed settings for one test (e.g. let it reach a local feed server)."""

    def change(**env: str) -> None:
        for name, value in env.items():
            monkeypatch.setenv(f"DIRECTORY_{name.upper()}", value)
        get_settings.cache_clear()

    yield change
    get_settings.cache_clear()


def test_import_from_a_url_by_api_and_cli(tmp_path, feed_settings):
    feed_settings(feed_allow_networks="127.0.0.0/8")
    (tmp_path / "feed.json").write_text(json.dumps(load("atlanta")))
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        response = client.post("/feeds/import?source=atl&timezone=America/New_York", json={"url": f"{base}/feed.json"},
                               headers=ADMIN)
        assert response.status_code == 200 and response.json()["created"] == 6
        result = CliRunner().invoke(cli, ["import", f"{base}/feed.json", "--source", "atl", "--timezone",
                                          "America/New_York"])
        assert result.exit_code == 0, result.output
        assert "6 rows, 0 created, 0 updated, 6 unchanged, 0 withdrawn, 0 rejected" in result.output
        missing = client.post("/feeds/import?source=atl", json={"url": f"{base}/missing.json"}, headers=ADMIN)
        assert missing.status_code == 422 and "HTTP 404" in missing.json()["detail"]
    finally:
        server.shutdown()
    assert live_count() == 6


def test_slugs_of_another_source_are_not_taken_over():
    import_rows(load("atlanta"), "atlanta")
    report = import_rows(load("atlanta")[:2], "copycat")
    assert report.created == 0 and len(report.rejected) == 2
    assert "another source (atlanta)" in report.rejected[0].reason
    assert {m.source for m in stored().values()} == {"atlanta"}


def test_export_is_a_spec_feed_that_round_trips():
    rows = load("sussexaa")
    import_rows(rows, "sussex", timezone="America/New_York")
    exported = client.get("/feeds/meeting-guide.json").json()
    assert len(exported) == 123
    by_slug = {r["slug"]: r for r in rows}
    for entry in exported:
        original = by_slug[entry["slug"]]
        for key in ("name", "day", "time", "end_time", "formatted_address", "latitude", "longitude", "attendance_option",
                    "location", "conference_url", "group"):
            assert entry.get(key) == original.get(key), (entry["slug"], key)
        assert entry["timezone"] == "America/New_York" and entry["approximate"] == original["approximate"]
        assert set(entry["types"]) <= set(original["types"])
        assert len(entry["updated"]) == 19
    # Imported into an empty directory, the export rebuilds the same feed.
    with runtime.transaction() as session:
        session.query(Meeting).delete()
    assert import_rows(exported, "sussex").created == 123
    again = client.get("/feeds/meeting-guide.json").json()
    strip = [{k: v for k, v in e.items() if k != "updated"} for e in exported]
    assert [{k: v for k, v in e.items() if k != "updated"} for e in again] == strip


class FeedServer:
    """A real HTTP server on a loopback address: routes answer a body, a redirect or a slow drip."""

    def __init__(self, host: str = "127.0.0.1"):
        self.routes: dict[str, tuple] = {}
        self.hits: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                owner.hits.append(self.path)
                kind, value = owner.routes.get(self.path, ("status", 404))
                if kind == "redirect":
                    self.send_response(302)
                    self.send_header("Location", value)
                    self.end_headers()
                elif kind == "body":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(value)))
                    self.end_headers()
                    self.wfile.write(value)
                elif kind == "drip":
                    self.send_response(200)
                    self.end_headers()
                    try:
                        for _ in range(value):
                            self.wfile.write(b" ")
                            self.wfile.flush()
                            time.sleep(0.25)
                    except (BrokenPipeError, ConnectionResetError):
                        pass  # the fetch gave up, as it should
                else:
                    self.send_response(value)
                    self.end_headers()

            def log_message(self, *args):
                """Quiet: the test output is not the place for access logs."""

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.port = self.server.server_address[1]
        self.base = f"http://{host}:{self.port}"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


ATLANTA = json.dumps([{"slug": "a-1", "name": "Morning group", "day": 1, "time": "07:00"}]).encode()


def refused_import(url: str, *hidden: str) -> str:
    response = client.post("/feeds/import?source=atl", json={"url": url}, headers=ADMIN)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    for text in hidden:
        assert text not in response.text, f"the error names {text!r}"
    return detail


@pytest.mark.parametrize("address", [
    "127.0.0.1:{port}", "localhost:{port}", "[::1]:{port}", "[::ffff:127.0.0.1]:{port}", "0.0.0.0:{port}",
    "127.1:{port}", "2130706433:{port}", "10.1.2.3:8080", "192.168.1.1", "172.16.0.1", "100.64.0.1",
    "169.254.169.254", "[fd00:ec2::254]", "100.100.100.200", "224.0.0.1", "240.0.0.1", "[fe80::1]",
])
def test_by_default_feed_urls_may_not_reach_internal_addresses(address):
    with FeedServer() as server:
        server.routes["/feed.json"] = ("body", ATLANTA)
        url = f"http://{address.format(port=server.port)}/feed.json"
        host = httpx.URL(url).host
        detail = refused_import(url, str(server.port), "127.0.0.1", "localhost", "8080", host)
        assert detail == feeds.REFUSED_ADDRESS
        with pytest.raises(feeds.FeedAddressRefused):
            feeds.fetch_feed(url.replace("http://", "https://"))
        assert server.hits == []  # nothing was even asked
    assert live_count() == 0


def test_a_redirect_from_an_allowed_server_to_an_internal_address_is_refused(feed_settings):
    feed_settings(feed_allow_networks="127.0.0.2/32")  # the first server only, as if it were public
    with FeedServer("127.0.0.2") as allowed, FeedServer("127.0.0.1") as internal:
        internal.routes["/feed.json"] = ("body", ATLANTA)
        allowed.routes["/to-internal"] = ("redirect", f"{internal.base}/feed.json")
        allowed.routes["/to-localhost"] = ("redirect", f"http://localhost:{internal.port}/feed.json")
        allowed.routes["/to-metadata"] = ("redirect", "http://169.254.169.254/latest/meta-data/")
        allowed.routes["/to-file"] = ("redirect", "file:///etc/passwd")
        allowed.routes["/feed.json"] = ("body", ATLANTA)
        allowed.routes["/moved"] = ("redirect", "/feed.json")
        for path in ("/to-internal", "/to-localhost", "/to-metadata"):
            detail = refused_import(f"{allowed.base}{path}", str(internal.port), str(allowed.port), "127.0.0")
            assert detail == feeds.REFUSED_ADDRESS
        assert "http:// or https://" in refused_import(f"{allowed.base}/to-file")
        assert internal.hits == []
        # Redirects among allowed addresses are followed.
        response = client.post("/feeds/import?source=atl", json={"url": f"{allowed.base}/moved"}, headers=ADMIN)
        assert response.status_code == 200 and response.json()["created"] == 1


def test_redirects_stop_after_five(feed_settings):
    feed_settings(feed_allow_networks="127.0.0.0/8")
    with FeedServer() as server:
        for hop in range(7):
            server.routes[f"/{hop}"] = ("redirect", f"/{hop + 1}")
        server.routes["/7"] = ("body", ATLANTA)
        detail = refused_import(f"{server.base}/0", str(server.port))
        assert "more than 5 redirects" in detail
        assert server.hits == ["/0", "/1", "/2", "/3", "/4", "/5"]
        server.routes["/2"] = ("redirect", "/7")  # 0 -> 1 -> 2 -> 7: three hops are fine
        assert client.post("/feeds/import?source=atl", json={"url": f"{server.base}/0"},
                           headers=ADMIN).json()["created"] == 1


def test_feeds_too_large_or_too_slow_are_refused(feed_settings):
    feed_settings(feed_allow_networks="127.0.0.0/8", feed_max_bytes="1000", feed_fetch_timeout="1")
    with FeedServer() as server:
        server.routes["/big.json"] = ("body", b"[" + b"{}," * 2000 + b"{}]")
        server.routes["/slow.json"] = ("drip", 40)
        assert refused_import(f"{server.base}/big.json", str(server.port)) == "the feed is larger than 1000 bytes"
        started = time.monotonic()
        detail = refused_import(f"{server.base}/slow.json", str(server.port))
        assert "took longer than the time allowed" in detail
        assert time.monotonic() - started < 5  # the whole fetch is timed, not each read
    assert live_count() == 0


def test_unreachable_feeds_fail_without_naming_the_host(feed_settings):
    feed_settings(feed_allow_networks="127.0.0.0/8")
    with FeedServer() as server:
        port = server.port
    detail = refused_import(f"http://127.0.0.1:{port}/feed.json", str(port), "127.0.0.1", "Connect")
    assert detail == feeds.COULD_NOT_FETCH
    assert refused_import("http://no-such-host.invalid/feed.json", "no-such-host") == feeds.COULD_NOT_FETCH
    for odd in ("http://xn--/feed.json", "http://example.org:99999/", "http://[v1.x]/", "http://u:p@/x"):
        refused_import(odd)  # a clear 4xx, never a 5xx


def test_metadata_addresses_are_refused_even_inside_allowed_networks():
    everything = [ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")]
    for address in ("169.254.169.254", "fd00:ec2::254", "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe"):
        assert not feeds.may_fetch(address, allowed_networks=everything)
    assert feeds.may_fetch("127.0.0.1", allowed_networks=everything)
    assert feeds.may_fetch("93.184.216.34", allowed_networks=[])
    assert feeds.may_fetch("2606:2800:220:1:248:1893:25c8:1946", allowed_networks=[])
    for address in ("64:ff9b::7f00:1", "2002:7f00:1::", "::ffff:10.0.0.1"):  # IPv4 inside IPv6
        assert not feeds.may_fetch(address, allowed_networks=[])
