"""The referral desk pages, through the real app and the Postgres test database.

They check what a keyworker sees: the text of the page, the error next to the field, the
buttons offered, and what was (or was not) stored.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from services.referrals import service
from services.referrals.api import app
from services.referrals.handlers import HANDLERS
from services.referrals.models import Referral, ReferralHistory
from services.referrals.runtime import runtime
from services.referrals.schemas import ReferralIn, TransitionIn
from shared.events import Event, ReminderFact
from tests.services.referrals.conftest import MOBILE_E164, counts, next_weekday, publish_meeting
from tests.support.auth import auth, token_for

pytestmark = pytest.mark.usefixtures("clean_state")

KEYWORKER = auth("keyworker", "croydon")
VOID = {"input", "br", "meta", "link", "img", "hr"}


class _Parsed(HTMLParser):
    """Visible text, text by element id, buttons and input values of a page (stdlib only)."""

    def __init__(self, html: str):
        super().__init__()
        self.text: list[str] = []
        self.by_id: dict[str, list[str]] = {}
        self.open: list[tuple[str, str | None]] = []
        self.buttons: list[str] = []
        self.inputs: dict[str, dict[str, str | None]] = {}
        self._button: list[str] | None = None
        self._skip = 0
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("style", "script"):
            self._skip += 1
        if tag in ("input", "textarea", "select") and attrs.get("id"):
            self.inputs[attrs["id"]] = attrs
        if tag == "button":
            self._button = []
        if tag not in VOID:
            self.open.append((tag, attrs.get("id")))
            if attrs.get("id"):
                self.by_id.setdefault(attrs["id"], [])

    def handle_endtag(self, tag):
        if tag in ("style", "script"):
            self._skip -= 1
        if tag == "button" and self._button is not None:
            self.buttons.append(" ".join("".join(self._button).split()))
            self._button = None
        while self.open:
            if self.open.pop()[0] == tag:
                break

    def handle_data(self, data):
        if self._skip:
            return
        self.text.append(data)
        if self._button is not None:
            self._button.append(data)
        for _tag, element_id in self.open:
            if element_id:
                self.by_id[element_id].append(data)


class Page:
    def __init__(self, response):
        self.response = response
        self.parsed = _Parsed(response.text)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.parsed.text).split())

    def by_id(self, element_id: str) -> str:
        assert element_id in self.parsed.by_id, f"no element #{element_id} on the page"
        return " ".join(" ".join(self.parsed.by_id[element_id]).split())

    def has(self, element_id: str) -> bool:
        return element_id in self.parsed.by_id

    def value(self, element_id: str) -> str | None:
        return self.parsed.inputs[element_id].get("value")

    @property
    def buttons(self) -> list[str]:
        return self.parsed.buttons


@pytest.fixture
def client():
    return TestClient(app)


@pytest.fixture
def meeting():
    return publish_meeting()


def get(client, url, headers=KEYWORKER, status=200) -> Page:
    response = client.get(url, headers=headers)
    assert response.status_code == status, response.text
    return Page(response)


def make_referral(reference="CRY-0042", *, mobile: str | None = "07812 345678", site="croydon", **kw) -> uuid.UUID:
    consent = {"to_reminders": True, "wording_version": service.CURRENT_CONSENT_WORDING} if mobile else None
    referral_in = ReferralIn(meeting_slug="croydon-smart-tuesday", client_reference=reference, mobile=mobile,
                             consent=consent, **kw)
    with runtime.transaction() as session:
        return service.create_referral(session, referral_in=referral_in, site_id=site, by="kw-1").id


def form_token(response) -> str:
    """The form token a page's forms carry (what the browser would post back)."""
    found = re.search(r'name="csrf_token" value="([0-9a-f]+)"', response.text)
    assert found, "no form token on the page"
    return found.group(1)


def signed_in_client(role="keyworker", site="croydon") -> TestClient:
    """A browser signed in by the cookie, through the sign-in form."""
    browser = TestClient(app)
    token = form_token(browser.get("/signin"))
    response = browser.post("/signin", data={"token": token_for(role, site), "next": "/desk", "csrf_token": token},
                            follow_redirects=False)
    assert response.status_code == 303
    return browser


def local_time_words(planned: dt.date) -> str:
    """How the page writes the Tuesday 2pm meeting on ``planned``."""
    return f"{planned:%A} {planned.day} {planned:%B %Y}, 2:00pm"


# --- signing in and who may see the desk ---------------------------------------------------

def test_anonymous_visitor_is_sent_to_sign_in_and_comes_back(client, meeting):
    response = client.get("/desk?stage=on-hold", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/signin?next=/desk%3Fstage%3Don-hold"

    token = form_token(client.get(response.headers["location"]))
    refused = client.post("/signin", data={"token": "not-a-token", "next": "/desk", "csrf_token": token},
                          follow_redirects=False)
    assert refused.status_code == 401
    assert "That token was not accepted" in Page(refused).text

    signed_in = client.post("/signin", data={"token": token_for("keyworker", "croydon"), "next": "/desk?stage=on-hold",
                                             "csrf_token": token}, follow_redirects=False)
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/desk?stage=on-hold"
    cookie = signed_in.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    page = get(client, "/desk", headers={})  # the cookie alone
    assert "Signed in as keyworker · croydon" in page.text


def test_commissioner_and_other_sites_are_refused(client, meeting):
    referral_id = make_referral()
    page = get(client, "/desk", headers=auth("commissioner", region="London"), status=403)
    assert "This page is for: keyworker, site lead, admin." in page.text
    get(client, f"/desk/referrals/{referral_id}", headers=auth("commissioner", region="London"), status=403)

    other = auth("keyworker", "sheffield")
    page = get(client, f"/desk/referrals/{referral_id}", headers=other, status=403)
    assert "another site" in page.text and "CRY-0042" not in page.text
    # Nor can they act on it.
    response = client.post(f"/desk/referrals/{referral_id}/transitions", data={"to": "contact-arranged"}, headers=other)
    assert response.status_code == 403
    assert "CRY-0042" not in get(client, "/desk", headers=other).text
    with runtime.sessions() as session:
        assert session.get(Referral, referral_id).business_status == "information-given"


def test_unknown_referral_is_a_not_found_page(client, meeting):
    assert "no such referral" in get(client, f"/desk/referrals/{uuid.uuid4()}", status=404).text
    assert "no such referral" in get(client, "/desk/referrals/not-a-uuid", status=404).text


# --- the list ----------------------------------------------------------------------------------

def test_list_shows_the_sites_referrals_in_plain_english(client, meeting):
    planned = next_weekday(meeting.day)
    held = make_referral("CRY-0001", planned_date=planned)
    make_referral("CRY-0002", mobile=None)
    make_referral("SHF-0003", site="sheffield")
    with runtime.transaction() as session:
        service.transition_referral(session, referral=service.lock_referral(session, held), by="kw-1",
                                    transition_in=TransitionIn(to="on-hold", reason="client in hospital"))
    page = get(client, "/desk")
    assert "Showing 1 to 2 of 2 referrals" in page.text
    assert "SHF-0003" not in page.text
    row = re.search(r"CRY-0001.*?(?=CRY-0002|$)", page.text).group(0)
    assert "SMART Recovery Croydon" in row and "Tuesdays at 2:00pm" in row
    assert local_time_words(planned) in row
    assert "On hold" in row
    assert "Consent given" in row
    assert "No reminders (no consent)" in page.text
    assert "Refer a client" in page.text

    filtered = get(client, "/desk?stage=on-hold")
    assert "CRY-0001" in filtered.text and "CRY-0002" not in filtered.text
    assert "Showing 1 to 1 of 1 referral" in filtered.text
    assert "Clear filters" in filtered.text
    nothing = get(client, "/desk?status=completed&meeting=croydon-smart-tuesday")
    assert "No referrals match these filters." in nothing.text

    refused = get(client, "/desk?stage=nonsense", status=400)
    assert "Choose a stage from the list" in refused.by_id("stage-error")


def test_list_pages_through_many_referrals(client, meeting):
    for n in range(23):
        make_referral(f"CRY-{n:04d}", mobile=None)
    first = get(client, "/desk")
    assert "Showing 1 to 20 of 23 referrals" in first.text and "Page 1 of 2" in first.text
    assert 'href="?page=2"' in first.response.text
    second = get(client, "/desk?page=2")
    assert "Showing 21 to 23 of 23 referrals" in second.text
    assert "Showing 21 to 23 of 23 referrals" in get(client, "/desk?page=9").text
    assert len(set(re.findall(r"CRY-\d{4}", first.text)) | set(re.findall(r"CRY-\d{4}", second.text))) == 23


# --- a new referral ------------------------------------------------------------------------------

def test_form_for_a_meeting_shows_it_with_its_next_date_and_the_consent_wording(client, meeting):
    page = get(client, "/desk/new?meeting=croydon-smart-tuesday")
    assert "SMART Recovery Croydon" in page.by_id("meeting-chosen")
    nxt = dt.date.fromisoformat(page.value("planned_date"))
    assert nxt.isoweekday() == 2 and 0 <= (nxt - dt.date.today()).days <= 7
    assert local_time_words(nxt) in page.by_id("planned_date-hint")
    assert page.by_id("consent-wording") == service.CONSENT_WORDING[service.CURRENT_CONSENT_WORDING]

    # Without a meeting: the local replica's meetings, searchable.
    publish_meeting(slug="croydon-aa-1", name="Croydon Monday Big Book", fellowship="aa", day=1, time="19:30",
                    postcode="CR0 1AA")
    chooser = get(client, "/desk/new")
    # The directory's search, near the site's meetings, is the first way to choose.
    find = f'href="{runtime.settings.directory_public_url}/?near=CR0+1AA"'
    assert find in chooser.response.text and "then choose Refer a client on a meeting" in chooser.text
    assert "Croydon Monday Big Book" in chooser.by_id("meeting") and "SMART Recovery Croydon" in chooser.by_id("meeting")
    searched = get(client, "/desk/new?q=big+book")
    assert "Croydon Monday Big Book" in searched.by_id("meeting")
    assert "SMART Recovery Croydon" not in searched.by_id("meeting")

    unknown = get(client, "/desk/new?meeting=no-such-meeting")
    assert "No meeting 'no-such-meeting' is known" in unknown.by_id("meeting-error")


def test_bad_input_is_shown_next_to_each_field_and_nothing_is_stored(client, meeting):
    before = counts()
    response = client.post("/desk/new", headers=KEYWORKER, data={
        "meeting": "croydon-smart-tuesday", "client_reference": "Jane Smith", "mobile": "020 7946 0000",
        "email": "not-an-email", "support": "accompanied_by_peer", "reminder_detail": "full"})
    assert response.status_code == 422
    page = Page(response)
    assert "Use 2-24 letters" in page.by_id("client_reference-error")
    assert "landline cannot receive text messages" in page.by_id("mobile-error")
    assert "Not a valid email address" in page.by_id("email-error")
    summary = page.by_id("error-summary")
    assert "There is a problem" in summary and "landline" in summary
    assert '<a href="#mobile">' in response.text
    # What was typed is kept.
    assert page.value("client_reference") == "Jane Smith" and page.value("mobile") == "020 7946 0000"
    assert re.search(r'value="accompanied_by_peer"\s+checked', response.text)
    assert counts() == before

    # A mobile without the consent box ticked is refused at the box.
    response = client.post("/desk/new", headers=KEYWORKER, data={
        "meeting": "croydon-smart-tuesday", "client_reference": "CRY-0042", "mobile": "07812 345678"})
    assert response.status_code == 422
    assert "Tick to confirm the client agreed to reminders" in Page(response).by_id("consent-error")
    # Consent ticked but nowhere to send reminders.
    response = client.post("/desk/new", headers=KEYWORKER, data={
        "meeting": "croydon-smart-tuesday", "client_reference": "CRY-0042", "consent": "yes"})
    assert "Give a mobile number or an email address" in Page(response).by_id("consent-error")
    # A date on the wrong weekday, from the service's own check.
    monday = next_weekday(1)
    response = client.post("/desk/new", headers=KEYWORKER, data={
        "meeting": "croydon-smart-tuesday", "client_reference": "CRY-0042", "planned_date": monday.isoformat()})
    assert response.status_code == 422
    assert "The meeting is on Tuesdays" in Page(response).by_id("planned_date-error")
    # No meeting chosen.
    response = client.post("/desk/new", headers=KEYWORKER, data={"client_reference": "CRY-0042"})
    assert "Choose a meeting" in Page(response).by_id("meeting-error")
    assert counts() == before


def test_a_referral_is_recorded_and_shown(client, meeting):
    planned = next_weekday(meeting.day, weeks_ahead=2)
    response = client.post("/desk/new", headers=KEYWORKER, follow_redirects=False, data={
        "meeting": "croydon-smart-tuesday", "client_reference": "CRY-0042", "support": "accompanied_by_peer",
        "planned_date": planned.isoformat(), "consent": "yes", "mobile": "07812 345678", "email": "",
        "reminder_detail": "discreet"})
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    assert re.fullmatch(r"/desk/referrals/[0-9a-f-]{36}\?notice=created", location)
    with runtime.sessions() as session:
        referral = session.scalars(select(Referral)).one()
    assert (referral.client_reference, referral.site_id, referral.planned_date) == ("CRY-0042", "croydon", planned)
    assert referral.mobile == MOBILE_E164 and referral.consent_wording_version == service.CURRENT_CONSENT_WORDING
    assert referral.support == "accompanied_by_peer" and referral.consent_recorded_by == "dev-user"

    page = get(client, location)
    assert "Referral recorded." in page.text
    assert page.by_id("status") == "Requested" and page.by_id("stage") == "Information given"
    assert local_time_words(planned) in page.text
    assert "07812 345678" in page.text  # in full for the owning site
    assert "A peer supporter will go with the client" in page.text
    assert "No reminders planned yet" in page.text
    assert "CRY-0042" in get(client, "/desk").text
    assert "<script" not in page.response.text  # every page works without JavaScript
    # An admin sees the contact masked, as the API does.
    admin = get(client, location.split("?")[0], headers=auth("admin"))
    assert "07*** ***678" in admin.text and "07812 345678" not in admin.text


# --- one referral ----------------------------------------------------------------------------------

def test_only_allowed_transitions_are_offered(client, meeting):
    referral_id = make_referral()
    page = get(client, f"/desk/referrals/{referral_id}")
    assert [b for b in page.buttons if b not in ("Withdraw consent to reminders", "Sign out")] == [
        "Mark contact arranged", "Plan the first meeting", "Put on hold", "Mark did not engage",
        "Record that the client declined", "Mark entered in error"]
    assert page.has("reason-on-hold") and page.has("reason-did-not-engage") and page.has("reason-declined")
    assert not page.has("reason-contact-arranged")

    response = client.post(f"/desk/referrals/{referral_id}/transitions", headers=KEYWORKER, follow_redirects=False,
                           data={"to": "first-meeting-planned"})
    assert response.status_code == 303
    page = get(client, response.headers["location"])
    assert "Stage changed." in page.text and page.by_id("stage") == "First meeting planned"
    assert page.by_id("status") == "In progress"
    assert "Mark first meeting attended" in page.buttons and "Mark contact arranged" not in page.buttons

    # Attending needs to know whether someone went along.
    response = client.post(f"/desk/referrals/{referral_id}/transitions", headers=KEYWORKER,
                           data={"to": "first-meeting-attended"})
    assert response.status_code == 422
    assert "Say whether someone went with the client" in Page(response).by_id("accompanied-first-meeting-attended-error")
    client.post(f"/desk/referrals/{referral_id}/transitions", headers=KEYWORKER,
                data={"to": "first-meeting-attended", "accompanied": "yes"})
    page = get(client, f"/desk/referrals/{referral_id}")
    assert [b for b in page.buttons if b not in ("Withdraw consent to reminders", "Sign out")] == [
        "Mark followed up", "Put on hold", "Mark did not engage", "Mark entered in error"]

    # A move not offered (a stale page, a hand-made form) is refused and explained.
    response = client.post(f"/desk/referrals/{referral_id}/transitions", headers=KEYWORKER, data={"to": "declined",
                                                                                                 "reason": "x"})
    assert response.status_code == 409
    assert "cannot move to “Client declined” from “First meeting attended”" in Page(response).by_id("error-summary")


def test_a_reason_is_required_where_the_lifecycle_says(client, meeting):
    referral_id = make_referral()
    before = counts()
    response = client.post(f"/desk/referrals/{referral_id}/transitions", headers=KEYWORKER,
                           data={"to": "on-hold", "reason": "   "})
    assert response.status_code == 422
    page = Page(response)
    assert "Give a reason to put on hold" in page.by_id("reason-on-hold-error")
    assert '<a href="#reason-on-hold">' in response.text
    assert not page.has("reason-declined-error")
    assert page.by_id("stage") == "Information given"
    assert counts() == before

    response = client.post(f"/desk/referrals/{referral_id}/transitions", headers=KEYWORKER, follow_redirects=False,
                           data={"to": "on-hold", "reason": "Client in hospital for two weeks"})
    assert response.status_code == 303
    with runtime.sessions() as session:
        rows = session.scalars(select(ReferralHistory).where(ReferralHistory.action == "transition")).all()
    assert [(r.from_stage, r.to_stage, r.reason, r.by) for r in rows] == [
        ("information-given", "on-hold", "Client in hospital for two weeks", "dev-user")]
    text = get(client, f"/desk/referrals/{referral_id}").text
    assert "Stage changed: Information given → On hold" in text and "Client in hospital for two weeks" in text


def test_consent_withdrawal_stops_reminders_and_erases_contact(client, meeting):
    referral_id = make_referral()
    page = get(client, f"/desk/referrals/{referral_id}")
    assert "Withdraw consent to reminders" in page.buttons
    response = client.post(f"/desk/referrals/{referral_id}/consent-withdrawal", headers=KEYWORKER, follow_redirects=False)
    assert response.status_code == 303
    page = get(client, response.headers["location"])
    assert "Consent withdrawn: no more reminders" in page.text
    assert "Withdraw consent to reminders" not in page.buttons
    assert "07812 345678" not in page.text and "Contact details Deleted" in page.text
    assert "Consent withdrawn" in page.text
    with runtime.sessions() as session:
        referral = session.get(Referral, referral_id)
        assert referral.mobile is None and referral.consent_withdrawn_by == "dev-user"
        assert referral.business_status == "information-given"  # the referral goes on
        outbox = session.execute(select(runtime.outbox_table.c.event_type)).scalars().all()
    assert "referral.consent_withdrawn" in outbox

    no_consent = make_referral("CRY-0099", mobile=None)
    assert "Withdraw consent to reminders" not in get(client, f"/desk/referrals/{no_consent}").buttons
    response = client.post(f"/desk/referrals/{no_consent}/consent-withdrawal", headers=KEYWORKER)
    assert response.status_code == 409 and "no consent to withdraw" in Page(response).text


def test_reminders_reported_by_notifications_are_listed_in_local_time(client, meeting):
    referral_id = make_referral()
    due = dt.datetime(2031, 6, 2, 17, 0, tzinfo=dt.UTC)  # summer: 6:00pm in London
    fact = ReminderFact(reminder_id=uuid.uuid4(), referral_id=referral_id, site_id="croydon", fellowship="smart",
                        kind="day_before", channel="sms", due_at=due)
    assert runtime.handle(Event.new("reminder.scheduled", fact, producer="notifications").model_dump(mode="json"),
                          HANDLERS)
    page = get(client, f"/desk/referrals/{referral_id}")
    row = re.search(r"The day before.*?(?=History)", page.text).group(0)
    assert "Text message" in row and "Monday 2 June 2031, 6:00pm" in row and "Planned" in row
    assert "Consent given: 1 planned" in get(client, "/desk").text

    assert runtime.handle(Event.new("reminder.sent", fact, producer="notifications").model_dump(mode="json"), HANDLERS)
    assert "Sent" in re.search(r"The day before.*?(?=History)", get(client, f"/desk/referrals/{referral_id}").text).group(0)


def test_an_admin_says_which_site_and_sees_every_site(client, meeting):
    admin = auth("admin")
    data = {"meeting": "croydon-smart-tuesday", "client_reference": "CRY-0500"}
    response = client.post("/desk/new", headers=admin, data=data)
    assert response.status_code == 422
    page = Page(response)
    assert "Enter the site the referral is for" in page.by_id("site_id-error")
    assert "<title>Error: Refer a client – FAMA</title>" in response.text
    assert counts()["referrals"] == 0

    response = client.post("/desk/new", headers=admin, data={**data, "site_id": "croydon"}, follow_redirects=False)
    assert response.status_code == 303
    make_referral("SHF-0001", site="sheffield", mobile=None)
    listing = get(client, "/desk", headers=admin)
    assert "CRY-0500" in listing.text and "SHF-0001" in listing.text
    only = get(client, "/desk?site=sheffield", headers=admin)
    assert "SHF-0001" in only.text and "CRY-0500" not in only.text
    # A keyworker cannot widen their view with the same parameter.
    assert "SHF-0001" not in get(client, "/desk?site=sheffield").text


EVIL = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}


def new_referral_form(browser, **extra) -> dict:
    return {"meeting": "croydon-smart-tuesday", "client_reference": "CRY-0077", "support": "none", "consent": "yes",
            "mobile": "07812 345678", "reminder_detail": "discreet", **extra}


def test_forms_signed_by_the_cookie_need_this_browsers_token_and_this_site(meeting):
    """Each desk form, posted with the keyworker's cookie from another site or without the form token,
    gets the 403 page and changes nothing; from the desk's own page it works."""
    browser = signed_in_client()
    referral_id = make_referral()
    page = browser.get(f"/desk/referrals/{referral_id}")
    token = form_token(page)
    assert page.text.count('name="csrf_token"') == page.text.count('method="post"')  # every form carries it
    before = counts()
    other_browser = form_token(TestClient(app).get("/signin"))
    posts = [("/desk/new", new_referral_form(browser)),
             (f"/desk/referrals/{referral_id}/transitions", {"to": "contact-arranged"}),
             (f"/desk/referrals/{referral_id}/consent-withdrawal", {})]
    for url, data in posts:
        for token_sent, headers in ((token, EVIL), (token, {"Origin": "https://evil.example"}),
                                    (token, {"Sec-Fetch-Site": "same-site"}), (None, {}), ("0" * 64, {}),
                                    (other_browser, {})):
            form = {**data, **({"csrf_token": token_sent} if token_sent else {})}
            response = browser.post(url, data=form, headers=headers, follow_redirects=False)
            assert response.status_code == 403, (url, token_sent, headers)
            refused = Page(response)
            assert "This form could not be sent" in refused.text and "reload the page and try again" in refused.text
    assert counts() == before
    with runtime.sessions() as session:
        referral = session.get(Referral, referral_id)
        assert referral.business_status == "information-given" and referral.mobile == MOBILE_E164

    same_origin = {"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"}
    moved = browser.post(f"/desk/referrals/{referral_id}/transitions", data={"to": "contact-arranged", "csrf_token": token},
                         headers=same_origin, follow_redirects=False)
    assert moved.status_code == 303 and moved.headers["location"].endswith("?notice=moved")
    withdrawn = browser.post(f"/desk/referrals/{referral_id}/consent-withdrawal", data={"csrf_token": token},
                             follow_redirects=False)
    assert withdrawn.status_code == 303
    form = browser.get("/desk/new?meeting=croydon-smart-tuesday")
    created = browser.post("/desk/new", data=new_referral_form(browser, csrf_token=form_token(form)), headers=same_origin,
                           follow_redirects=False)
    assert created.status_code == 303, created.text
    with runtime.sessions() as session:
        referral = session.get(Referral, referral_id)
        assert referral.business_status == "contact-arranged" and referral.mobile is None
        assert session.scalar(select(Referral).where(Referral.client_reference == "CRY-0077")) is not None


def test_a_bearer_token_alone_needs_no_form_token_but_is_still_refused_cross_site(client, meeting):
    """A browser never adds an Authorization header by itself, so scripts with a token post as before;
    a cross-site request is refused whatever it carries."""
    referral_id = make_referral()
    url = f"/desk/referrals/{referral_id}/transitions"
    assert client.post(url, data={"to": "contact-arranged"}, headers={**KEYWORKER, **EVIL}).status_code == 403
    moved = client.post(url, data={"to": "contact-arranged"}, headers=KEYWORKER, follow_redirects=False)
    assert moved.status_code == 303


def test_get_sign_out_does_not_sign_out(meeting):
    browser = signed_in_client()
    assert browser.get("/signin/out").status_code == 200
    page = get(browser, "/desk", headers={})
    assert "Signed in as keyworker · croydon" in page.text and "Sign out" in page.buttons
    out = browser.post("/signin/out", data={"csrf_token": form_token(page.response)}, follow_redirects=False)
    assert out.status_code == 303
    assert browser.get("/desk", follow_redirects=False).status_code == 303


def test_desk_pages_and_referral_responses_are_never_stored(client, meeting):
    referral_id = make_referral()
    browser = signed_in_client()
    for url in ("/desk", "/desk/new", f"/desk/referrals/{referral_id}"):
        assert browser.get(url).headers["cache-control"] == "no-store", url
        assert client.get(url, headers=KEYWORKER).headers["cache-control"] == "no-store", url
    assert client.get("/desk", follow_redirects=False).headers["cache-control"] == "no-store"  # even the redirect
    api = client.get(f"/referrals/{referral_id}", headers=KEYWORKER)
    assert api.status_code == 200 and api.headers["cache-control"] == "no-store"
    csp = api.headers["content-security-policy"]
    assert "unsafe-inline" not in csp and "cdn" not in csp
