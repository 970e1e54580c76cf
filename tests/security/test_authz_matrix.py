"""Who may call what: every API endpoint x every role x own/other site, from one table.

RULES says who each kind of endpoint admits; ENDPOINTS classifies every endpoint of the
three services (a test fails if a new endpoint is not classified). Each cell is one real
request through the service's app against the Postgres test databases.
"""

from __future__ import annotations

import datetime as dt
import importlib
import uuid

import pytest
from fastapi.testclient import TestClient

from services.notifications.handlers import HANDLERS as NOTIFICATIONS_HANDLERS
from services.notifications.runtime import runtime as notifications
from services.referrals import service as referrals_service
from services.referrals.handlers import HANDLERS as REFERRALS_HANDLERS
from services.referrals.runtime import runtime as referrals
from services.referrals.schemas import ReferralIn
from shared.crypto import FieldCipher
from shared.events import ContactDetails, Event, MeetingSnapshot, ReferralCreated
from tests.conftest import SERVICES, flush_redis, truncate_all
from tests.support.auth import auth

# Callers: anonymous, staff of the owning site and of another, commissioners of the owning
# region and of another, admin.
CALLERS = {
    "anonymous": None,
    "keyworker-own": ("keyworker", "croydon", None),
    "keyworker-other": ("keyworker", "sheffield", None),
    "site_lead-own": ("site_lead", "croydon", None),
    "site_lead-other": ("site_lead", "sheffield", None),
    "commissioner-own": ("commissioner", None, "London"),
    "commissioner-other": ("commissioner", None, "Yorkshire and the Humber"),
    "admin": ("admin", None, None),
}
OK = "ok"

RULES: dict[str, dict[str, int | str]] = {
    # Anyone, signed in or not.
    "public": dict.fromkeys(CALLERS, OK),
    # Admins only.
    "admin": {**dict.fromkeys(CALLERS, 403), "anonymous": 401, "admin": OK},
    # Anyone signed in (what they see is filtered to their scope).
    "signed_in": {**dict.fromkeys(CALLERS, OK), "anonymous": 401},
    # A site's record: its staff, its region's commissioners, admins.
    "site": {"anonymous": 401, "keyworker-own": OK, "keyworker-other": 403, "site_lead-own": OK, "site_lead-other": 403,
             "commissioner-own": OK, "commissioner-other": 403, "admin": OK},
    # Aggregates across sites: commissioners (their region) and admins.
    "commissioner": {**dict.fromkeys(CALLERS, 403), "anonymous": 401, "commissioner-own": OK, "commissioner-other": OK,
                     "admin": OK},
    # Site staff acting for their own site (admins for any); commissioners never see referrals.
    "staff": {**dict.fromkeys(CALLERS, OK), "anonymous": 401, "commissioner-own": 403, "commissioner-other": 403},
    # One referral: only the owning site's staff and admins.
    "own_referral": {"anonymous": 401, "keyworker-own": OK, "keyworker-other": 403, "site_lead-own": OK,
                     "site_lead-other": 403, "commissioner-own": 403, "commissioner-other": 403, "admin": OK},
    # Site leads (what they see is their own site's) and admins: the audit trail.
    "site_lead": {**dict.fromkeys(CALLERS, 403), "anonymous": 401, "site_lead-own": OK, "site_lead-other": OK,
                  "admin": OK},
    # GOV.UK Notify callbacks take their own bearer token, never a user's.
    "callback": dict.fromkeys(CALLERS, 401),
}

MEETING = {"slug": "croydon-smart-2", "name": "SMART Recovery Croydon", "fellowship": "smart", "day": 2, "time": "14:00",
           "end_time": "15:30", "timezone": "Europe/London", "attendance_option": "in_person", "location": "Hub",
           "postcode": "CR0", "latitude": 51.372, "longitude": -0.074, "site_id": "croydon"}
SITE = {"id": "croydon", "name": "Croydon", "host_agency": "Croydon Recovery Network", "region": "London", "postcode": "CR0"}
OTHER_SITE = {"id": "sheffield", "name": "Sheffield", "host_agency": "Sheffield Alcohol Support Service",
              "region": "Yorkshire and the Humber", "postcode": "S1"}


def unsubscribe_path() -> str:
    from services.notifications import service as notifications_service

    address_hash = notifications_service.contact_hash("matrix@example.org", "email")
    return f"/unsubscribe/{notifications_service.unsubscribe_token(address_hash)}"


def new_referral() -> uuid.UUID:
    """A fresh Croydon referral with consent, known to referrals and to notifications."""
    with referrals.transaction() as session:
        referral = referrals_service.create_referral(
            session, site_id="croydon", by="matrix",
            referral_in=ReferralIn(meeting_slug=MEETING["slug"], client_reference="CRY-0001", mobile="07812 345678",
                                   consent={"to_reminders": True, "wording_version": "2025-01"}))
        referral_id = referral.id
        planned = referral.planned_date
    sealed = ContactDetails(mobile="+447812345678").seal(FieldCipher(notifications.settings.contact_transit_keys))
    event = Event.new("referral.created", ReferralCreated(
        referral_id=referral_id, site_id="croydon", meeting_slug=MEETING["slug"], fellowship="smart", planned_date=planned,
        support="none", status="requested", business_status="information-given", consent_to_reminders=True,
        contact_ciphertext=sealed), producer="referrals")
    notifications.handle(event.model_dump(mode="json"), NOTIFICATIONS_HANDLERS)
    return referral_id


def unique_slug() -> str:
    return f"matrix-{uuid.uuid4().hex[:8]}"


def new_feed_source() -> str:
    from services.directory.models import FeedSource
    from services.directory.runtime import runtime as directory

    source_id = unique_slug()
    with directory.transaction() as session:
        session.add(FeedSource(id=source_id, fellowship="aa", timezone="Europe/London", active=True, created_by="matrix"))
    return source_id


def new_held_run() -> int:
    from services.directory.models import ImportRun
    from services.directory.runtime import runtime as directory

    source_id = new_feed_source()
    with directory.transaction() as session:
        run = ImportRun(source_id=source_id, trigger="schedule", by="matrix", status="held", live_before=0, held_rows=[])
        session.add(run)
        session.flush()
        return run.id


# (service, method, path, rule, expected success status, request builder -> (path, json))
ENDPOINTS = [
    ("directory", "GET", "/healthz", "public", 200, None),
    ("directory", "GET", "/readyz", "public", 200, None),
    ("directory", "GET", "/metrics", "public", 200, None),
    ("directory", "GET", "/meetings", "public", 200, lambda: ("/meetings?near=CR0&radius_km=5", None)),
    ("directory", "POST", "/meetings", "admin", 201, lambda: ("/meetings", {**MEETING, "slug": unique_slug()})),
    ("directory", "GET", "/meetings/{slug}", "public", 200, lambda: ("/meetings/croydon-smart-2", None)),
    ("directory", "PUT", "/meetings/{slug}", "admin", 200, lambda: ("/meetings/croydon-smart-2", MEETING)),
    ("directory", "PATCH", "/meetings/{slug}", "admin", 200, lambda: ("/meetings/croydon-smart-2", {"time": "14:00"})),
    ("directory", "POST", "/meetings/{slug}/exceptions", "admin", 422,
     lambda: ("/meetings/croydon-smart-2/exceptions", {"date": "not-a-date"})),
    ("directory", "DELETE", "/meetings/{slug}/exceptions/{date}", "admin", 404,
     lambda: ("/meetings/croydon-smart-2/exceptions/2030-01-01", None)),
    ("directory", "POST", "/meetings/{slug}/withdraw", "admin", 200, None),
    ("directory", "GET", "/meeting-types", "public", 200, None),
    ("directory", "GET", "/feeds/meeting-guide.json", "public", 200, None),
    ("directory", "POST", "/feeds/import", "admin", 200, lambda: ("/feeds/import?source=matrix", [])),
    ("directory", "GET", "/sites", "signed_in", 200, None),
    ("directory", "POST", "/sites", "admin", 201,
     lambda: ("/sites", {**SITE, "id": unique_slug(), "name": "New site"})),
    ("directory", "GET", "/sites/{site_id}", "site", 200, lambda: ("/sites/croydon", None)),
    ("directory", "PUT", "/sites/{site_id}", "admin", 200, lambda: ("/sites/croydon", SITE)),
    ("directory", "PATCH", "/sites/{site_id}", "admin", 200, lambda: ("/sites/croydon", {"postcode": "CR0"})),
    ("directory", "GET", "/engagement", "commissioner", 200, None),
    ("directory", "GET", "/engagement.csv", "commissioner", 200, None),
    ("directory", "GET", "/sites/{site_id}/engagement", "site", 200, lambda: ("/sites/croydon/engagement", None)),
    ("directory", "POST", "/feed-sources", "admin", 201, lambda: ("/feed-sources", {"id": unique_slug()})),
    ("directory", "GET", "/feed-sources", "admin", 200, None),
    ("directory", "GET", "/feed-sources/{source_id}/runs", "admin", 200,
     lambda: (f"/feed-sources/{new_feed_source()}/runs", None)),
    ("directory", "POST", "/feed-sources/{source_id}/import", "admin", 200,
     lambda: (f"/feed-sources/{new_feed_source()}/import", [])),
    ("directory", "POST", "/import-runs/{run_id}/confirm", "admin", 200,
     lambda: (f"/import-runs/{new_held_run()}/confirm", None)),
    ("directory", "POST", "/import-runs/{run_id}/discard", "admin", 200,
     lambda: (f"/import-runs/{new_held_run()}/discard", None)),
    ("referrals", "GET", "/healthz", "public", 200, None),
    ("referrals", "GET", "/readyz", "public", 200, None),
    ("referrals", "GET", "/metrics", "public", 200, None),
    ("referrals", "POST", "/referrals", "staff", 201, None),
    ("referrals", "GET", "/referrals", "staff", 200, None),
    ("referrals", "GET", "/referrals/{referral_id}", "own_referral", 200,
     lambda: (f"/referrals/{new_referral()}", None)),
    ("referrals", "POST", "/referrals/{referral_id}/transitions", "own_referral", 200,
     lambda: (f"/referrals/{new_referral()}/transitions", {"to": "contact-arranged"})),
    ("referrals", "POST", "/referrals/{referral_id}/consent-withdrawal", "own_referral", 200,
     lambda: (f"/referrals/{new_referral()}/consent-withdrawal", None)),
    ("referrals", "GET", "/consent-wording", "signed_in", 200, None),
    ("referrals", "GET", "/audit", "site_lead", 200, None),
    ("notifications", "GET", "/healthz", "public", 200, None),
    ("notifications", "GET", "/readyz", "public", 200, None),
    ("notifications", "GET", "/metrics", "public", 200, None),
    ("notifications", "POST", "/callbacks/delivery", "callback", 200,
     lambda: ("/callbacks/delivery", {"id": str(uuid.uuid4()), "reference": str(uuid.uuid4()), "status": "delivered"})),
    ("notifications", "POST", "/callbacks/inbound-sms", "callback", 200,
     lambda: ("/callbacks/inbound-sms", {"id": str(uuid.uuid4()), "source_number": "447700900999", "message": "hi"})),
    # An email's unsubscribe link needs no sign-in: its signed token is the key (tested in test_unsubscribe.py).
    ("notifications", "GET", "/unsubscribe/{token}", "public", 200, lambda: (unsubscribe_path(), None)),
    ("notifications", "POST", "/unsubscribe/{token}", "public", 200, lambda: (unsubscribe_path(), None)),
    ("notifications", "GET", "/outbox", "admin", 200, None),
    ("notifications", "GET", "/referrals/{referral_id}/reminders", "own_referral", 200,
     lambda: (f"/referrals/{new_referral()}/reminders", None)),
]


def _withdraw_builder():
    slug = unique_slug()
    with TestClient(_app("directory")) as client:
        assert client.post("/meetings", json={**MEETING, "slug": slug}, headers=auth("admin")).status_code == 201
    return f"/meetings/{slug}/withdraw", None


def _create_referral_builder(caller: str):
    body = {"meeting_slug": MEETING["slug"], "client_reference": "CRY-0002", "support": "none"}
    if caller == "admin":
        body["site_id"] = "croydon"
    return "/referrals", body


def _app(service: str):
    return importlib.import_module(f"services.{service}.api").app


@pytest.fixture(scope="module")
def world():
    for service in SERVICES:
        truncate_all(service)
    flush_redis()
    with TestClient(_app("directory")) as client:
        for site in (SITE, OTHER_SITE):
            assert client.post("/sites", json=site, headers=auth("admin")).status_code == 201
        assert client.post("/meetings", json=MEETING, headers=auth("admin")).status_code == 201
    snapshot = MeetingSnapshot(**{k: v for k, v in MEETING.items()})
    event = Event.new("meeting.published", snapshot, producer="directory")
    referrals.handle(event.model_dump(mode="json"), REFERRALS_HANDLERS)
    notifications.handle(event.model_dump(mode="json"), NOTIFICATIONS_HANDLERS)
    return True


CASES = [(e, caller) for e in ENDPOINTS for caller in CALLERS]


@pytest.mark.parametrize(("endpoint", "caller"), CASES,
                         ids=[f"{e[0]}:{e[1]}:{e[2]}:{c}" for e, c in CASES])
def test_matrix(world, endpoint, caller):
    service, method, path, rule, ok_status, builder = endpoint
    expected = RULES[rule][caller]
    expected = ok_status if expected == OK else expected
    if path == "/meetings/{slug}/withdraw":
        url, body = _withdraw_builder()
    elif service == "referrals" and path == "/referrals" and method == "POST":
        url, body = _create_referral_builder(caller)
    elif builder is not None:
        url, body = builder()
    else:
        url, body = path, None
    headers = auth(*CALLERS[caller]) if CALLERS[caller] else {}
    with TestClient(_app(service)) as client:
        response = client.request(method, url, json=body, headers=headers)
    assert response.status_code == expected, f"{method} {url} as {caller}: {response.status_code} {response.text[:300]}"


def test_callbacks_admit_the_notify_token_only(world):
    token = notifications.settings.callback_token
    with TestClient(_app("notifications")) as client:
        body = {"id": str(uuid.uuid4()), "reference": str(uuid.uuid4()), "status": "delivered"}
        assert client.post("/callbacks/delivery", json=body, headers={"Authorization": f"Bearer {token}"}).status_code == 200
        assert client.post("/callbacks/delivery", json=body,
                           headers={"Authorization": f"Bearer {token}x"}).status_code == 401


def test_every_endpoint_is_classified():
    listed = {(s, m, p) for s, m, p, *_ in ENDPOINTS}
    for service in ("directory", "referrals", "notifications"):
        for path, operations in _app(service).openapi()["paths"].items():
            for method in operations:
                assert (service, method.upper(), path) in listed, f"{service} {method.upper()} {path} is not in the matrix"


def test_expired_token_is_refused_everywhere(world):
    from shared.auth import issue_token
    from shared.settings import ServiceSettings

    expired = issue_token(ServiceSettings(), role="admin", ttl=dt.timedelta(seconds=-1))
    for service, method, path, rule, _ok, builder in ENDPOINTS:
        if rule in ("public", "callback") or "{" in path:
            continue
        with TestClient(_app(service)) as client:
            response = client.request(method, path, json={} if method != "GET" else None,
                                      headers={"Authorization": f"Bearer {expired}"})
        assert response.status_code == 401, f"{service} {method} {path}"
