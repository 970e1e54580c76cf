"""The admin pages (/admin) and "report a problem with this meeting", through the real app and Postgres.

They check what an admin (or a site lead) sees and what was stored: the meeting's history naming
who changed what, each bad field explained next to it with nothing stored, an import's report,
a held import waiting for a decision, and a reported problem reaching the admins.
"""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from services.directory.admin import prune_closed_requests
from services.directory.api import app
from services.directory.models import ChangeRequest, FeedSource, ImportRun, Meeting, MeetingChange, Site
from services.directory.runtime import runtime
from services.directory.schemas import SiteIn
from services.directory.service import create_site
from tests.services.directory.helpers import FEEDS, outbox_events
from tests.support.auth import token_for

pytestmark = pytest.mark.usefixtures("clean_state")
SAME_ORIGIN = {"sec-fetch-site": "same-origin"}


def form_token(response) -> str:
    found = re.search(r'name="csrf_token" value="([0-9a-f]+)"', response.text)
    assert found, "no form token on the page"
    return found.group(1)


def browser(role: str | None = "admin", site: str | None = None) -> TestClient:
    client = TestClient(app)
    if role:
        client.cookies.set("fama_token", token_for(role, site))
    return client


def post(client: TestClient, page: str, path: str, data: dict, **kw):
    token = form_token(client.get(page))
    return client.post(path, data={**data, "csrf_token": token}, headers=SAME_ORIGIN, follow_redirects=False, **kw)


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def stored_meeting(slug: str) -> Meeting | None:
    with runtime.sessions() as session:
        return session.scalar(select(Meeting).where(Meeting.slug == slug))


MEETING_FORM = {"slug": "kendal-smart-monday", "name": "SMART Recovery Kendal", "fellowship": "smart", "day": "1",
                "time": "18:30", "end_time": "20:00", "timezone": "Europe/London", "types": "O, D",
                "attendance_option": "in_person", "location": "Kendal Hub", "postcode": "LA9 4DL", "site_id": "kendal"}


def test_an_admin_creates_edits_and_withdraws_a_meeting_and_sees_who_did_what():
    admin = browser()
    created = post(admin, "/admin/meetings/new", "/admin/meetings/new", MEETING_FORM)
    assert created.status_code == 303, created.text
    assert created.headers["location"] == "/admin/meetings/kendal-smart-monday?notice=created"

    saved = post(admin, "/admin/meetings/kendal-smart-monday", "/admin/meetings/kendal-smart-monday",
                 {**MEETING_FORM, "time": "19:00", "end_time": "20:30"})
    assert saved.headers["location"].endswith("notice=saved")
    withdrawn = post(admin, "/admin/meetings/kendal-smart-monday", "/admin/meetings/kendal-smart-monday/withdraw",
                     {"reason": "The venue has closed"})
    assert withdrawn.status_code == 303

    page = text_of(admin.get("/admin/meetings/kendal-smart-monday").text)
    assert "Withdrawn" in page
    assert "Withdrawn dev-user" not in page  # history rows: when, who, what
    assert re.search(r"dev-user Withdrawn The venue has closed", page)
    assert re.search(r"dev-user Updated: end_time, time", page)
    assert re.search(r"dev-user Created", page)
    assert stored_meeting("kendal-smart-monday").active is False
    kinds = [kind for kind, payload in outbox_events() if payload.get("slug") == "kendal-smart-monday"]
    assert kinds == ["meeting.published", "meeting.updated", "meeting.withdrawn"]
    with runtime.sessions() as session:
        assert [c.by for c in session.scalars(select(MeetingChange))] == ["dev-user"] * 3


def test_bad_meeting_fields_are_shown_next_to_each_field_and_nothing_is_stored():
    admin = browser()
    response = post(admin, "/admin/meetings/new", "/admin/meetings/new",
                    {**MEETING_FORM, "time": "25:99", "types": "O, ZZZ", "name": ""})
    assert response.status_code == 422
    page = response.text
    for field in ("time", "types", "name"):
        assert f'id="{field}-error"' in page and f'href="#{field}"' in page
    assert page.count('aria-invalid="true"') == 3
    assert "Unknown Meeting Guide type code(s): ZZZ" in page
    assert "Enter a time like 19:30 (24-hour clock)" in page and "Fill this in" in page
    assert 'value="SMART Recovery Kendal"' not in page and 'value="Kendal Hub"' in page  # what was typed comes back
    assert stored_meeting("kendal-smart-monday") is None
    assert outbox_events() == []
    no_reason = post(admin, "/admin/meetings/new", "/admin/meetings/new", MEETING_FORM)
    assert no_reason.status_code == 303
    refused = post(admin, "/admin/meetings/kendal-smart-monday", "/admin/meetings/kendal-smart-monday/withdraw",
                   {"reason": ""})
    assert refused.status_code == 422 and "Say why the meeting is withdrawn" in refused.text
    assert stored_meeting("kendal-smart-monday").active is True


def test_who_may_use_the_admin_pages():
    with runtime.transaction() as session:
        for site_id in ("kendal", "croydon"):
            create_site(session, site_in=SiteIn(id=site_id, name=site_id.title(), host_agency="Change Grow Live",
                                                region="North West" if site_id == "kendal" else "London"))
    assert browser(None).get("/admin", follow_redirects=False).headers["location"] == "/signin?next=/admin"
    assert browser("keyworker", "kendal").get("/admin/meetings").status_code == 403
    assert browser("commissioner").get("/admin").status_code == 403
    lead = browser("site_lead", "kendal")
    assert lead.get("/admin", follow_redirects=False).headers["location"] == "/admin/sites/kendal"
    assert lead.get("/admin/meetings").status_code == 403
    assert lead.get("/admin/sites/croydon").status_code == 403
    own = lead.get("/admin/sites/kendal")
    assert own.status_code == 200 and 'name="region"' in own.text and 'id="region" name="region" value="North West" ' \
        'autocomplete="off" disabled' in own.text
    changed = post(lead, "/admin/sites/kendal", "/admin/sites/kendal",
                   {"champion_name": "Sam Champion", "champion_email": "sam@example.org", "region": "Elsewhere",
                    "host_agency": "Turning Point"})
    assert changed.status_code == 303
    with runtime.sessions() as session:
        site = session.get(Site, "kendal")
        assert (site.champion_name, site.host_agency, site.region) == ("Sam Champion", "Turning Point", "North West")
    bad = post(lead, "/admin/sites/kendal", "/admin/sites/kendal", {"host_agency": "", "champion_email": "not-an-email"})
    assert bad.status_code == 422 and 'id="champion_email-error"' in bad.text
    assert '/admin">Admin</a>' in own.text  # the main navigation offers it to site leads and admins


def test_feed_sources_their_imports_and_a_held_import_on_the_pages():
    admin = browser()
    refused = post(admin, "/admin/feeds", "/admin/feeds", {"id": "atl", "every_hours": "6", "timezone": "Mars/Base"})
    assert refused.status_code == 422
    assert 'id="timezone-error"' in refused.text
    added = post(admin, "/admin/feeds", "/admin/feeds", {"id": "atl", "fellowship": "aa", "timezone": "America/New_York"})
    assert added.headers["location"] == "/admin/feeds/atl"

    rows = json.loads((FEEDS / "atlanta.json").read_text())
    rows.append({"slug": "broken", "name": "Broken", "day": 9, "time": "19:00"})
    token = form_token(admin.get("/admin/feeds/atl"))
    uploaded = admin.post("/admin/feeds/atl/import", data={"csrf_token": token}, headers=SAME_ORIGIN,
                          files={"feed": ("atlanta.json", json.dumps(rows), "application/json")}, follow_redirects=False)
    assert uploaded.status_code == 303
    report = text_of(admin.get(uploaded.headers["location"]).text)
    assert "Applied" in report
    assert re.search(r"7 rows 6 created 0 updated 0 unchanged 0 withdrawn 1 rejected", report)
    assert "day 9 is out of range 0-6" in report

    token = form_token(admin.get("/admin/feeds/atl"))
    held = admin.post("/admin/feeds/atl/import", data={"csrf_token": token}, headers=SAME_ORIGIN,
                      files={"feed": ("atlanta.json", json.dumps(rows[:1]), "application/json")}, follow_redirects=False)
    held_page = admin.get(held.headers["location"])
    assert "would withdraw 5 of the 6 live meetings" in text_of(held_page.text)
    assert "Held: waiting for an admin" in held_page.text
    overview = text_of(admin.get("/admin").text)
    assert "atl: would withdraw 5 of 6 meetings" in overview
    with runtime.sessions() as session:
        assert session.scalar(select(FeedSource.id)) == "atl"
        run_id = session.scalar(select(ImportRun.id).where(ImportRun.status == "held"))
    discard = admin.post(f"/admin/runs/{run_id}/discard", data={"csrf_token": form_token(held_page)},
                         headers=SAME_ORIGIN, follow_redirects=False)
    assert discard.status_code == 303
    assert "Discarded by an admin" in admin.get(f"/admin/runs/{run_id}").text
    with runtime.sessions() as session:
        assert len(session.scalars(select(Meeting).where(Meeting.source == "atl", Meeting.active.is_(True))).all()) == 6

    bad_file = admin.post("/admin/feeds/atl/import", data={"csrf_token": token}, headers=SAME_ORIGIN,
                          files={"feed": ("feed.json", b"{not json", "application/json")})
    assert bad_file.status_code == 422 and "Nothing has changed" in bad_file.text


def test_anyone_reports_a_problem_with_a_meeting_and_an_admin_resolves_it():
    admin = browser()
    assert post(admin, "/admin/meetings/new", "/admin/meetings/new", MEETING_FORM).status_code == 303
    visitor = browser(None)
    assert 'href="/meeting/kendal-smart-monday/problem"' in visitor.get("/meeting/kendal-smart-monday").text
    missing = post(visitor, "/meeting/kendal-smart-monday/problem", "/meeting/kendal-smart-monday/problem",
                   {"description": ""})
    assert missing.status_code == 422
    assert "Choose what is wrong" in missing.text and "Say what is wrong" in missing.text
    forged = visitor.post("/meeting/kendal-smart-monday/problem", data={"kind": "time", "description": "x"},
                          headers=SAME_ORIGIN)
    assert forged.status_code == 403
    sent = post(visitor, "/meeting/kendal-smart-monday/problem", "/meeting/kendal-smart-monday/problem",
                {"kind": "time", "description": "It moved to Tuesdays at 7pm"})
    assert sent.status_code == 200 and "Thank you" in sent.text
    with runtime.sessions() as session:
        request = session.scalar(select(ChangeRequest))
    assert (request.kind, request.reported_by, request.status) == ("time", "public", "open")

    listed = admin.get("/admin/problems")
    assert "It moved to Tuesdays at 7pm" in listed.text and "The day or time is wrong" in listed.text
    resolved = admin.post(f"/admin/problems/{request.id}", headers=SAME_ORIGIN, follow_redirects=False,
                          data={"decision": "resolve", "resolution": "Time corrected", "csrf_token": form_token(listed)})
    assert resolved.status_code == 303
    assert "It moved to Tuesdays" not in admin.get("/admin/problems").text
    assert "Time corrected" in admin.get("/admin/problems?show=all").text
    assert browser("keyworker", "kendal").get("/admin/problems").status_code == 403


def test_closed_problem_reports_are_deleted_after_the_retention_period():
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=91)
    with runtime.transaction() as session:
        for status, resolved_at in (("resolved", old), ("dismissed", dt.datetime.now(dt.UTC)), ("open", None)):
            session.add(ChangeRequest(meeting_slug="m", at=old, kind="other", description="x", reported_by="public",
                                      status=status, resolved_at=resolved_at))
    assert prune_closed_requests() == 1
    with runtime.sessions() as session:
        assert sorted(session.scalars(select(ChangeRequest.status))) == ["dismissed", "open"]


# --- schedules and dated closures ----------------------------------------------------------

def test_staff_set_a_monthly_schedule_and_close_one_date_recorded_and_published():
    admin = browser()
    created = post(admin, "/admin/meetings/new", "/admin/meetings/new",
                   {**MEETING_FORM, "repeat": "monthly", "week": "-1", "dtstart": "2026-12-01"})
    assert created.status_code == 303, created.text
    stored = stored_meeting("kendal-smart-monday")
    assert (stored.rrule, stored.dtstart, stored.day) == ("FREQ=MONTHLY;BYDAY=-1MO", dt.date(2026, 12, 1), 1)
    page = admin.get("/admin/meetings/kendal-smart-monday").text
    assert "Now: Last Monday of the month" in text_of(page)
    assert re.search(r'<option value="monthly" selected', page) and re.search(r'<option value="-1" selected', page)

    path = "/admin/meetings/kendal-smart-monday"
    closed = post(admin, path, f"{path}/exceptions", {"exception_date": "2026-12-28", "exception_what": "closed",
                                                       "exception_note": "Christmas"})
    assert closed.status_code == 303, closed.text
    page = text_of(admin.get(closed.headers["location"]).text)
    assert "Closed Mon 28 December: Christmas" in page and "clients with reminders for it are told" in page
    assert "Closed Mon 28 December: Christmas (added)" in page  # the history
    assert stored_meeting("kendal-smart-monday").exceptions == [
        {"date": "2026-12-28", "closed": True, "time": None, "end_time": None, "note": "Christmas"}]
    assert [kind for kind, _ in outbox_events()] == ["meeting.published", "meeting.updated"]

    reopened = post(admin, path, f"{path}/exceptions/2026-12-28/remove", {})
    assert reopened.status_code == 303
    assert stored_meeting("kendal-smart-monday").exceptions == []
    assert "(removed)" in text_of(admin.get(path).text)


@pytest.mark.parametrize(("form", "field", "words"), [
    ({"exception_date": "2026-02-30"}, "exception_date", "Enter a real date"),
    ({"exception_date": "2026-12-29"}, "exception_date", "does not meet on Tue 29 December"),
    ({"exception_date": "2026-12-28", "exception_what": "changed"}, "exception_date", "another start time or a note"),
    ({"exception_date": "2026-12-28", "exception_what": "changed", "exception_time": "25:00"}, "exception_time",
     "Enter a time like 19:30"),
])
def test_a_bad_date_is_explained_next_to_its_field_and_nothing_is_stored(form, field, words):
    admin = browser()
    assert post(admin, "/admin/meetings/new", "/admin/meetings/new", MEETING_FORM).status_code == 303  # Mondays
    path = "/admin/meetings/kendal-smart-monday"
    response = post(admin, path, f"{path}/exceptions", {"exception_what": "closed", **form})
    assert response.status_code == 422
    assert re.search(rf'id="{field}-error">.*{re.escape(words)}', response.text), text_of(response.text)
    assert stored_meeting("kendal-smart-monday").exceptions == []
    assert [kind for kind, _ in outbox_events()] == ["meeting.published"]


@pytest.mark.parametrize(("form", "field", "words"), [
    ({"repeat": "fortnightly"}, "dtstart", "Give the first date"),
    ({"repeat": "one_off", "dtstart": "2026-13-01"}, "dtstart", "valid date"),
    ({"repeat": "rule", "rrule": "FREQ=DAILY", "dtstart": "2026-12-07"}, "rrule", "FREQ must be WEEKLY"),
    ({"repeat": "rule", "rrule": "FREQ=WEEKLY;BYDAY=TU", "dtstart": "2026-12-07"}, "day", "Tuesdays"),
])
def test_a_schedule_that_cannot_be_followed_is_explained_and_nothing_changes(form, field, words):
    admin = browser()
    assert post(admin, "/admin/meetings/new", "/admin/meetings/new", MEETING_FORM).status_code == 303
    path = "/admin/meetings/kendal-smart-monday"
    response = post(admin, path, path, {**MEETING_FORM, **form})
    assert response.status_code == 422
    assert re.search(rf'id="{field}-error">.*{re.escape(words)}', response.text), text_of(response.text)
    stored = stored_meeting("kendal-smart-monday")
    assert (stored.rrule, stored.dtstart, stored.day) == (None, None, 1)
