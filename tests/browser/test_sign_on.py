"""Single sign-on in the browser, at a real OpenID Connect provider (panva/oidc-provider, run by node).

Staff sign in at the provider; its groups give the FAMA role and site (as Entra ID groups would,
through OIDC_ROLE_MAP and OIDC_SITE_MAP). A person with no FAMA group is refused and told why; a
forged, replayed or spliced callback signs no one in; an ended session sends its holder to sign in
again; signing out ends the provider's session too. The APIs check bearer tokens against the
provider's JWKS: one for another audience or from another issuer's key is refused.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import time
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from playwright.sync_api import expect

from tests.browser.conftest import screenshot
from tests.conftest import SERVICES, flush_redis, truncate_all
from tests.support.oidc import CLIENT_ID, OidcProvider
from tests.support.processes import api_server, wait_for
from tests.support.stack import Stack, _ready, free_port

pytestmark = pytest.mark.browser

PROVIDER = "Test Health Trust"
ACCOUNTS = {
    "kim": {"name": "Kim Keyworker", "email": "kim@example.org", "groups": ["fama-keyworkers", "site-croydon"]},
    "ada": {"name": "Ada Admin", "email": "ada@example.org", "groups": ["fama-admins", "finance"]},
    "nobody": {"name": "Noor Finance", "email": "noor@example.org", "groups": ["finance"]},
}
CLAIM_MAPPING = {
    "OIDC_ROLE_CLAIM": "groups",
    "OIDC_ROLE_MAP": json.dumps({"fama-keyworkers": "keyworker", "fama-site-leads": "site_lead",
                                 "fama-admins": "admin"}),
    "OIDC_SITE_CLAIM": "groups",
    "OIDC_SITE_MAP": json.dumps({"site-croydon": "croydon", "site-kendal": "kendal"}),
}


@pytest.fixture(scope="module")
def sign_on():
    """The provider, the directory and referrals APIs signing in there, and a referrals API whose sessions end fast."""
    for service in SERVICES:
        truncate_all(service)
    flush_redis()
    stack = Stack()
    short_port = free_port()
    short_url = f"http://127.0.0.1:{short_port}"
    bases = [*stack.urls.values(), short_url]
    provider = OidcProvider(accounts=ACCOUNTS, redirect_uris=[f"{b}/signin/callback" for b in bases],
                            post_logout_redirect_uris=[f"{b}/signin/signed-out" for b in bases]).start()
    stack.env.update(provider.settings_env(), **CLAIM_MAPPING)
    stack.start(("directory-api", "referrals-api"))
    short = api_server("referrals", short_port, env={**stack.env, "REFERRALS_PUBLIC_URL": short_url,
                                                     "SESSION_HOURS": "0.001"}).start(timeout=60)
    wait_for(lambda: _ready(short_url), timeout=30, what="short-session referrals API")
    yield {"provider": provider, "stack": stack, "directory": stack.urls["directory"],
           "referrals": stack.urls["referrals"], "short": short_url}
    short.stop()
    stack.stop()
    provider.stop()


def sign_in_at_provider(page, login: str) -> None:
    expect(page.locator("input[name=login]")).to_be_visible()
    page.fill("input[name=login]", login)
    page.fill("input[name=password]", "any password")
    page.locator("button[type=submit]").first.click()


def test_a_keyworker_signs_in_at_the_provider_and_out_of_both(sign_on, page):
    referrals, directory = sign_on["referrals"], sign_on["directory"]
    page.goto(f"{referrals}/desk")
    expect(page).to_have_url(re.compile(r"/signin\?next=/desk"))
    expect(page.get_by_text("Paste the access token")).to_have_count(0)
    screenshot(page, "sign-in-single-sign-on")
    page.get_by_role("link", name=f"Sign in with {PROVIDER}").click()
    expect(page).to_have_url(re.compile(re.escape(sign_on["provider"].issuer)))
    sign_in_at_provider(page, "kim")

    expect(page).to_have_url(f"{referrals}/desk")
    expect(page.locator("header .who")).to_contain_text("keyworker · croydon")
    cookie = next(c for c in page.context.cookies() if c["name"] == "fama_session_referrals")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    held = json.loads(base64.b64decode(cookie["value"].split(".")[0] + "=="))  # signed, not secret: so nothing personal
    assert held["fama"]["role"] == "keyworker" and held["fama"]["site"] == "croydon"
    assert "kim@example.org" not in json.dumps(held) and "Kim Keyworker" not in json.dumps(held)

    # The other service: one click, no password (the provider's session signs in silently).
    page.goto(f"{directory}/dashboard")
    page.get_by_role("link", name=f"Sign in with {PROVIDER}").click()
    expect(page).to_have_url(f"{directory}/dashboard")
    expect(page.locator("header .who")).to_contain_text("keyworker · croydon")

    # Signing out on the desk ends the FAMA session and, after the provider asks, the provider's.
    page.goto(f"{referrals}/desk")
    page.get_by_role("button", name="Sign out").click()
    page.get_by_role("button", name="Yes, sign me out").click()
    expect(page).to_have_url(re.compile(re.escape(f"{referrals}/signin/signed-out")))
    expect(page.get_by_role("heading")).to_have_text("You are signed out")
    expect(page.locator("main")).to_contain_text(f"signed out of FAMA and of {PROVIDER}")
    page.goto(f"{referrals}/desk")
    expect(page).to_have_url(re.compile(r"/signin\?next=/desk"))
    page.get_by_role("link", name=f"Sign in with {PROVIDER}").click()
    expect(page.locator("input[name=login]")).to_be_visible()  # the provider asks again: its session ended too


def test_someone_without_a_fama_group_is_refused_and_told_why(sign_on, page):
    referrals = sign_on["referrals"]
    page.goto(f"{referrals}/desk")
    page.get_by_role("link", name=f"Sign in with {PROVIDER}").click()
    sign_in_at_provider(page, "nobody")
    expect(page.get_by_role("heading")).to_have_text("You cannot use FAMA yet")
    expect(page.locator("main")).to_contain_text("your account has no FAMA role")
    expect(page.locator("main")).to_contain_text("Ask your FAMA administrator")
    screenshot(page, "sign-in-no-role")
    page.goto(f"{referrals}/desk")
    expect(page).to_have_url(re.compile(r"/signin\?next=/desk"))


def test_forged_replayed_and_spliced_callbacks_sign_no_one_in(sign_on, browser):
    referrals = sign_on["referrals"]
    callback = f"{referrals}/signin/callback"

    # Forged: a state this browser never started.
    victim = browser.new_context()
    page = victim.new_page()
    page.goto(f"{callback}?code=made-up&state=made-up")
    expect(page.locator(".error-summary")).to_contain_text("This sign-in could not be checked")
    expect(page.locator(".error-summary")).to_contain_text("Nothing has changed")
    page.goto(f"{referrals}/desk")
    expect(page).to_have_url(re.compile(r"/signin\?next=/desk"))

    # Spliced: another browser's unused code (an admin's) delivered with this browser's own state. The
    # state matches, but the code was issued for the other browser's PKCE challenge and nonce.
    admin_code = unused_code(referrals, "ada")
    authorizations: list[str] = []
    page.on("request", lambda request: authorizations.append(request.url)
            if request.url.startswith(f"{sign_on['provider'].issuer}/auth?") else None)
    page.goto(f"{referrals}/signin/start?next=/desk")
    expect(page.locator("input[name=login]")).to_be_visible()
    own_state = parse_qs(urlsplit(authorizations[0]).query)["state"][0]
    page.goto(f"{callback}?code={admin_code}&state={own_state}")
    expect(page.locator(".error-summary")).to_contain_text("This sign-in could not be checked")
    page.goto(f"{referrals}/desk")
    expect(page).to_have_url(re.compile(r"/signin\?next=/desk"))

    # Replayed: a real callback used once by its own browser, then again by another.
    kim = browser.new_context()
    seen: list[str] = []
    kim_page = kim.new_page()
    kim_page.on("request", lambda request: seen.append(request.url) if request.url.startswith(callback) else None)
    kim_page.goto(f"{referrals}/signin/start?next=/desk")
    sign_in_at_provider(kim_page, "kim")
    expect(kim_page).to_have_url(f"{referrals}/desk")
    page.goto(seen[0])
    expect(page.locator(".error-summary")).to_contain_text("This sign-in could not be checked")
    page.goto(f"{referrals}/desk")
    expect(page).to_have_url(re.compile(r"/signin\?next=/desk"))
    kim_page.goto(seen[0])  # even in its own browser the code works once: kim stays kim, nothing else changes
    expect(kim_page.locator(".error-summary")).to_contain_text("This sign-in could not be checked")
    kim_page.goto(f"{referrals}/desk")
    expect(kim_page.locator("header .who")).to_contain_text("keyworker · croydon")
    for context in (victim, kim):
        context.close()


def unused_code(base: str, login: str) -> str:
    """Another browser's sign-in (here httpx), stopped before its code reaches FAMA: an unused code for its PKCE."""
    callback = f"{base}/signin/callback"
    with httpx.Client(timeout=10) as other_browser:
        response = other_browser.get(f"{base}/signin/start?next=/desk")
        for _ in range(12):
            if response.is_redirect:
                location = urljoin(str(response.url), response.headers["location"])
                if location.startswith(callback):
                    return parse_qs(urlsplit(location).query)["code"][0]
                response = other_browser.get(location)
            else:  # the provider's sign-in form
                action = re.search(r'action="([^"]+)"', response.text).group(1)
                response = other_browser.post(urljoin(str(response.url), action),
                                              data={"prompt": "login", "login": login, "password": "any password"})
    raise AssertionError("the provider never redirected to the callback")


def test_an_ended_session_sends_its_holder_to_sign_in_again(sign_on, page):
    short = sign_on["short"]
    page.goto(f"{short}/desk")
    page.get_by_role("link", name=f"Sign in with {PROVIDER}").click()
    sign_in_at_provider(page, "kim")
    expect(page).to_have_url(f"{short}/desk")
    time.sleep(4)  # SESSION_HOURS=0.001: 3.6 seconds
    page.goto(f"{short}/desk")
    expect(page).to_have_url(re.compile(r"/signin\?next=/desk"))
    expect(page.locator(".notice")).to_contain_text("Your session has ended")
    expect(page.locator("header .who")).to_have_count(0)


def _provider_token(provider: OidcProvider, *, key=None, audience: str = CLIENT_ID, issuer: str | None = None,
                    groups: list[str]) -> str:
    now = dt.datetime.now(dt.UTC)
    claims = {"sub": "api-user", "iss": issuer or provider.issuer, "aud": audience, "iat": now,
              "exp": now + dt.timedelta(minutes=5), "groups": groups}
    return jwt.encode(claims, key or provider.private_key, algorithm="RS256", headers={"kid": provider.kid})


def test_the_apis_refuse_tokens_for_another_audience_or_from_another_issuer(sign_on):
    provider, referrals = sign_on["provider"], sign_on["referrals"]
    new_referral = {"meeting_slug": "no-such-meeting", "client_reference": "CRO-0001"}

    def call(token: str, method: str = "GET"):
        headers = {"Authorization": f"Bearer {token}"}
        if method == "POST":
            return httpx.post(f"{referrals}/referrals", json=new_referral, headers=headers, timeout=10)
        return httpx.get(f"{referrals}/referrals", headers=headers, timeout=10)

    good = _provider_token(provider, groups=["fama-keyworkers", "site-croydon"])
    assert call(good).status_code == 200

    other_audience = _provider_token(provider, audience="another-app", groups=["fama-admins"])
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other_issuer = _provider_token(provider, key=other_key, groups=["fama-admins"])
    named_other_issuer = _provider_token(provider, issuer="https://other.example", groups=["fama-admins"])
    for token in (other_audience, other_issuer, named_other_issuer):
        for method in ("GET", "POST"):
            response = call(token, method)
            assert response.status_code == 401, response.text
            assert "sign in again" in response.json()["detail"]

    no_role = call(_provider_token(provider, groups=["finance"]))
    assert no_role.status_code == 403
    assert "no FAMA role" in no_role.json()["detail"]
    assert call(good).json()["items"] == []  # nothing was created by the refused calls
