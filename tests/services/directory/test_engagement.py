"""Engagement counters from real events: once per fact, by week; who may read them; suppression; CSV."""

from __future__ import annotations

import csv
import datetime as dt
import io
import uuid

import pytest
from fastapi.testclient import TestClient

from services.directory import engagement, service
from services.directory.api import app
from services.directory.handlers import HANDLERS
from services.directory.runtime import runtime
from services.directory.schemas import SiteIn
from shared.events import (
    ContactOptedOut,
    Event,
    OptedOutReferral,
    ReferralCreated,
    ReferralStatusChanged,
    ReminderFact,
    Stage,
)
from tests.services.directory.helpers import fix_rounding
from tests.support.auth import auth
from tests.support.events import signed
from tests.support.processes import wait_for

pytestmark = pytest.mark.usefixtures("clean_state")
client = TestClient(app)
MONDAY = dt.datetime(2026, 11, 16, 10, 0, tzinfo=dt.UTC)  # ISO week 2026-W47


@pytest.fixture
def sites():
    with runtime.transaction() as session:
        for site_id, region in (("croydon", "London"), ("sheffield", "Yorkshire and the Humber"),
                                ("lambeth", "London")):
            service.create_site(session, site_in=SiteIn(id=site_id, name=site_id.title(), host_agency=f"{site_id} CGL",
                                                        region=region, champion_email=f"champion@{site_id}.example.org"))


def created(referral_id, *, site="croydon", fellowship="aa", at=MONDAY) -> Event:
    return Event.new("referral.created", ReferralCreated(
        referral_id=referral_id, site_id=site, meeting_slug="m", fellowship=fellowship, planned_date=at.date(),
        support="accompanied", status="requested", business_status=Stage.information_given, consent_to_reminders=True,
    ), producer="referrals", occurred_at=at)


def changed(referral_id, to_status, stage, *, accompanied=None, site="croydon", fellowship="aa", at=MONDAY) -> Event:
    return Event.new("referral.status_changed", ReferralStatusChanged(
        referral_id=referral_id, site_id=site, meeting_slug="m", fellowship=fellowship, from_status="requested",
        to_status=to_status, business_status=stage, accompanied=accompanied,
    ), producer="referrals", occurred_at=at)


def reminder(kind, referral_id, reminder_id, *, at=MONDAY) -> Event:
    return Event.new(kind, ReminderFact(reminder_id=reminder_id, referral_id=referral_id, site_id="croydon", fellowship="aa",
                                        kind="day_before", channel="sms"), producer="notifications", occurred_at=at)


def handle(event: Event) -> bool:
    return runtime.handle(event.model_dump(mode="json"), HANDLERS)


def figures(**kw) -> dict:
    """Every site's exact figures, as an admin reads them."""
    with runtime.sessions() as session:
        return engagement.read(session, scope=engagement.Scope("All regions"), **kw)


def totals(**kw) -> dict:
    return figures(**kw)["totals"]


def test_each_fact_counts_once_whatever_the_order_or_repetition(sites):
    r1, r2 = uuid.uuid4(), uuid.uuid4()
    attended = changed(r1, "in-progress", Stage.first_meeting_attended, accompanied=True)
    # Out of order: the stage arrives before the referral itself.
    assert handle(attended)
    assert handle(created(r1))
    assert not handle(attended)  # a redelivery is ignored by the inbox
    # A second event stating the same fact (a replay from the producer, new event id) counts nothing.
    assert handle(changed(r1, "in-progress", Stage.first_meeting_attended, accompanied=True))
    assert handle(changed(r1, "accepted", Stage.contact_arranged))
    assert handle(changed(r1, "completed", Stage.followed_up))
    assert handle(created(r2))
    assert handle(changed(r2, "failed", Stage.did_not_engage))
    reminder_id = uuid.uuid4()
    for kind in ("reminder.sent", "reminder.sent", "reminder.delivered"):
        handle(reminder(kind, r1, reminder_id))
    handle(reminder("reminder.failed", r2, uuid.uuid4()))
    opt_out = Event.new("contact.opted_out", ContactOptedOut(channel="sms", contact_hash="h", referrals=[
        OptedOutReferral(referral_id=r2, site_id="croydon", fellowship="aa")]), producer="notifications")
    handle(opt_out)
    handle(Event.new("contact.opted_out", opt_out.parsed(), producer="notifications"))
    assert totals() == {
        "referrals_made": 2, "contact_arranged": 1, "first_meeting_attended": 1, "accompanied": 1, "followed_up": 1,
        "did_not_engage": 1, "declined": 0, "consent_withdrawn": 0, "reminders_sent": 1, "reminders_delivered": 1,
        "reminders_failed": 1, "opted_out": 1, "client_reported_attended": 0, "attendance_confirmed": 0,
    }


def test_weeks_fellowships_and_date_filters(sites):
    handle(created(uuid.uuid4(), at=MONDAY))
    handle(created(uuid.uuid4(), at=MONDAY + dt.timedelta(days=6, hours=12)))  # Sunday, same ISO week
    handle(created(uuid.uuid4(), at=MONDAY + dt.timedelta(days=7)))
    handle(created(uuid.uuid4(), fellowship="smart", at=MONDAY + dt.timedelta(days=7)))
    data = figures()
    assert [(w["week"], w["counts"]["referrals_made"]) for w in data["weeks"]] == [("2026-W47", 2), ("2026-W48", 2)]
    assert totals(fellowship="smart")["referrals_made"] == 1
    assert totals(date_from=dt.date(2026, 11, 23))["referrals_made"] == 2
    assert totals(date_to=dt.date(2026, 11, 22))["referrals_made"] == 2


def test_who_may_read_engagement_and_what_commissioners_see(sites):
    for _ in range(3):
        handle(created(uuid.uuid4(), site="croydon"))
    for _ in range(6):
        handle(created(uuid.uuid4(), site="lambeth"))
    handle(created(uuid.uuid4(), site="sheffield"))
    fix_rounding(4)  # 3 rounds down to "<5", 6 down to 5
    commissioner = auth("commissioner", region="London")
    got = client.get("/engagement", headers=commissioner)
    assert got.status_code == 200, got.text
    body = got.json()
    # Commissioners see rounded figures; the total is the sum of the rounded sites, never 9.
    assert body["suppressed"] is True and body["totals"]["referrals_made"] == 5
    assert {s["site_id"]: s["counts"]["referrals_made"] for s in body["sites"]} == {"croydon": "<5", "lambeth": 5}
    assert body["totals"]["declined"] == 0
    admin = client.get("/engagement", headers=auth("admin")).json()
    assert admin["suppressed"] is False and admin["totals"]["referrals_made"] == 10
    assert {s["site_id"]: s["counts"]["referrals_made"] for s in admin["sites"]}["croydon"] == 3
    # Site staff read their own site only, unsuppressed.
    own = client.get("/sites/croydon/engagement", headers=auth("site_lead", site="croydon"))
    assert own.status_code == 200 and own.json()["totals"]["referrals_made"] == 3
    assert own.json()["weeks"][0]["week"] == "2026-W47"
    assert client.get("/sites/croydon/engagement", headers=auth("keyworker", site="croydon")).status_code == 200
    assert client.get("/sites/lambeth/engagement", headers=auth("keyworker", site="croydon")).status_code == 403
    assert client.get("/sites/croydon/engagement", headers=commissioner).json()["totals"]["referrals_made"] == "<5"
    assert client.get("/sites/sheffield/engagement", headers=commissioner).status_code == 403
    assert client.get("/engagement", headers=auth("keyworker", site="croydon")).status_code == 403
    assert client.get("/engagement", headers=auth("site_lead", site="croydon")).status_code == 403
    assert client.get("/engagement", headers=auth("commissioner")).status_code == 403
    assert client.get("/engagement").status_code == 401
    assert client.get("/sites/croydon/engagement").status_code == 401
    assert client.get("/engagement", params={"from": "2026-12-01", "to": "2026-11-01"},
                      headers=auth("admin")).status_code == 422
    assert client.get("/engagement", params={"from": "yesterday"}, headers=auth("admin")).status_code == 422
    assert client.get("/sites/nowhere/engagement", headers=auth("admin")).status_code == 404


def test_csv_export_suppresses_for_commissioners(sites):
    for _ in range(2):
        handle(created(uuid.uuid4(), site="croydon"))
    for _ in range(5):
        handle(created(uuid.uuid4(), site="lambeth", fellowship="na"))
    fix_rounding(4)
    response = client.get("/engagement.csv", headers=auth("commissioner", region="London"))
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [(r["week"], r["site_id"], r["fellowship"], r["referrals_made"]) for r in rows] == [
        ("2026-W47", "croydon", "aa", "<5"), ("2026-W47", "lambeth", "na", "5")]
    assert rows[0]["declined"] == "0"
    admin = client.get("/engagement", params={"format": "csv", "fellowship": "aa"}, headers=auth("admin"))
    assert [r["referrals_made"] for r in csv.DictReader(io.StringIO(admin.text))] == ["2"]


def test_sites_admin_api_and_visibility():
    admin = auth("admin")
    site = {"id": "norwich", "name": "Norwich", "host_agency": "CGL Norfolk", "region": "East of England",
            "champion_name": "Alex", "champion_email": "alex@example.org", "postcode": "nr1 1aa"}
    created_site = client.post("/sites", json=site, headers=admin)
    assert created_site.status_code == 201 and created_site.json()["postcode"] == "NR1 1AA"
    assert client.post("/sites", json=site, headers=admin).status_code == 409
    bad = client.post("/sites", json={**site, "id": "x", "champion_email": "nope", "region": ""}, headers=admin)
    assert bad.status_code == 422 and {e["field"] for e in bad.json()["errors"]} == {"champion_email", "region"}
    patched = client.patch("/sites/norwich", json={"active": False, "champion_phone": "01603 000000"}, headers=admin)
    assert patched.status_code == 200 and patched.json()["active"] is False
    assert patched.json()["champion_name"] == "Alex"
    assert client.get("/sites/norwich", headers=auth("keyworker", site="norwich")).status_code == 200
    assert client.get("/sites/norwich", headers=auth("keyworker", site="croydon")).status_code == 403
    assert client.get("/sites/norwich", headers=auth("commissioner", region="London")).status_code == 403
    assert [s["id"] for s in client.get("/sites", headers=auth("commissioner", region="East of England")).json()] == [
        "norwich"]
    assert client.get("/sites", headers=auth("commissioner", region="London")).json() == []
    assert client.patch("/sites/norwich", json={"active": True}, headers=auth("site_lead", site="norwich")).status_code == 403
    from sqlalchemy import text

    with runtime.engine.connect() as conn:
        stored = conn.execute(text("SELECT champion_email FROM sites")).scalar_one()
    assert "alex@" not in stored


def test_counters_through_a_real_directory_worker(sites, processes):
    """Events sent over Redis to the directory's queue are counted by its Celery worker, once."""
    processes.worker("directory")
    referral_id = uuid.uuid4()
    events = [created(referral_id), changed(referral_id, "accepted", Stage.contact_arranged),
              changed(referral_id, "cancelled", Stage.declined)]
    for event in events + events[:1]:  # the first one delivered twice
        runtime.outbox.send("directory", signed(event))

    def counted():
        t = totals()
        return t if t["declined"] == 1 else None

    t = wait_for(counted, timeout=30, what="the directory worker to count the events")
    assert (t["referrals_made"], t["contact_arranged"], t["declined"]) == (1, 1, 1)
    fix_rounding(4)
    commissioner = client.get("/engagement", headers=auth("commissioner", region="London")).json()
    assert commissioner["totals"]["referrals_made"] == "<5"


@pytest.mark.parametrize("text,cell", [("=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"), ("+1", "'+1"),
                                       ("-2+3", "'-2+3"), ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"), ("\rx", "'\rx"),
                                       ("Croydon", "Croydon"), ("a=b", "a=b")])
def test_spreadsheet_safe_cells(text, cell):
    assert engagement.spreadsheet_safe(text) == cell


def test_every_csv_download_escapes_formula_cells():
    """A site's name and region are typed by an admin, a site id arrives in events: none runs as a formula."""
    with runtime.transaction() as session:
        service.create_site(session, site_in=SiteIn(id="evil", name="=HYPERLINK(\"http://x.example\",\"click\")",
                                                    host_agency="CGL", region="@London"))
    handle(created(uuid.uuid4(), site="evil"))
    handle(created(uuid.uuid4(), site="-1+cmd|' /C calc'!A0"))  # a site id no admin registered
    downloads = [client.get("/engagement.csv", headers=auth("admin")),
                 client.get("/engagement", params={"format": "csv"}, headers=auth("commissioner", region="@London")),
                 client.get("/sites/evil/engagement", params={"format": "csv"}, headers=auth("site_lead", site="evil")),
                 client.get("/dashboard/engagement.csv", headers=auth("admin"))]
    for response in downloads:
        assert response.status_code == 200, response.text
        rows = list(csv.DictReader(io.StringIO(response.text)))
        assert rows and all(not value.startswith(("=", "+", "-", "@", "\t", "\r"))
                            for row in rows for value in row.values()), response.text
        evil = next(r for r in rows if r["site_id"] == "evil")
        assert evil["site"] == "'=HYPERLINK(\"http://x.example\",\"click\")" and evil["region"] == "'@London"
    assert "'-1+cmd|' /C calc'!A0" in downloads[0].text
    # Both downloads have the same columns.
    assert downloads[0].text.splitlines()[0] == downloads[3].text.splitlines()[0] == ",".join(engagement.CSV_COLUMNS)


def test_client_reported_and_confirmed_attendance_are_counted_apart_once_each(sites):
    from shared.events import AttendanceReported

    said_yes, said_no, confirmed_alone = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()

    def report(referral_id, attendance):
        return Event.new("attendance.reported", AttendanceReported(
            referral_id=referral_id, site_id="croydon", fellowship="aa", attendance=attendance),
            producer="notifications", occurred_at=MONDAY)

    for event in (report(said_yes, "attended"), report(said_yes, "attended"), report(said_no, "not_attended")):
        assert handle(event)
    confirmed = Event.new("referral.status_changed", ReferralStatusChanged(
        referral_id=said_yes, site_id="croydon", meeting_slug="m", fellowship="aa", from_status="in-progress",
        to_status="in-progress", business_status=Stage.first_meeting_attended, accompanied=False,
        client_reported=True), producer="referrals", occurred_at=MONDAY)
    assert handle(confirmed)
    assert handle(changed(confirmed_alone, "in-progress", Stage.first_meeting_attended, accompanied=False))
    counts = totals()
    assert (counts["client_reported_attended"], counts["attendance_confirmed"], counts["first_meeting_attended"]) == (
        1, 1, 2)
    # Commissioners see them like every figure: rounded, a 1 shown as "<5".
    fix_rounding(4)
    shown = client.get("/engagement", headers=auth("commissioner", region="London")).json()["totals"]
    assert (shown["client_reported_attended"], shown["attendance_confirmed"]) == ("<5", "<5")
