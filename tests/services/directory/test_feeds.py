"""Meeting Guide feeds: the real feeds import with the right counts and fields; export round-trips."""

from __future__ import annotations

import json
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from services.directory import feeds
from services.directory.api import app
from services.directory.cli import app as cli
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


def test_import_from_a_url_by_api_and_cli(tmp_path):
    (tmp_path / "feed.json").write_text(json.dumps(load("atlanta")))
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        response = client.post("/feeds/import?source=atl", json={"url": f"{base}/feed.json"}, headers=ADMIN)
        assert response.status_code == 200 and response.json()["created"] == 6
        result = CliRunner().invoke(cli, ["import", f"{base}/feed.json", "--source", "atl"])
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
