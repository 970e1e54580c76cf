"""Page sign-in with a token: redirect to sign in, refuse bad tokens and wrong roles, forms that
cannot be forged from another site, no caching of signed-in pages."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated

import pytest
from fastapi import Depends, Request
from fastapi.testclient import TestClient

from shared.auth import Principal, Role, issue_token
from shared.pages import HERE, make_templates, parse_date, require_page_roles, setup_pages
from shared.settings import ServiceSettings
from shared.web import make_app

SETTINGS = ServiceSettings(jwt_secret="page-test-secret-long-enough-for-hs256")


EVIL = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}


def form_token(page) -> str:
    """The form token a page's form carries (what the browser would post back)."""
    found = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page.text)
    assert found, "no form token on the page"
    return found.group(1)


def sign_in(client, token: str, next_url: str = "/desk", **kw):
    form = client.get(f"/signin?next={next_url}")
    return client.post("/signin", data={"token": token, "next": next_url, "csrf_token": form_token(form)},
                       follow_redirects=False, **kw)


@pytest.fixture
def client():
    app = make_app(service="x", settings=SETTINGS, engine=lambda: None, title="FAMA x")
    templates = make_templates(HERE / "templates")
    setup_pages(app, templates)

    @app.get("/desk", include_in_schema=False)
    def desk(request: Request, principal: Annotated[Principal, Depends(require_page_roles(Role.keyworker))]):
        return templates.TemplateResponse(request, "message.html", {"title": "Desk", "message": f"Hello {principal.site}",
                                                                    "principal": principal})

    return TestClient(app)


def test_visitor_is_sent_to_sign_in_and_back(client):
    response = client.get("/desk?status=requested", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/signin?next=/desk%3Fstatus%3Drequested"
    form = client.get(response.headers["location"])
    assert 'name="token"' in form.text and '<label for="token">Access token</label>' in form.text
    token = issue_token(SETTINGS, role="keyworker", site="norwich")
    signed_in = client.post("/signin", data={"token": token, "next": "/desk?status=requested",
                                             "csrf_token": form_token(form)}, follow_redirects=False)
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/desk?status=requested"
    assert "httponly" in signed_in.headers["set-cookie"].lower()
    page = client.get("/desk")
    assert page.status_code == 200 and "Hello norwich" in page.text and "Signed in as keyworker" in page.text
    signed_out = client.post("/signin/out", data={"csrf_token": form_token(page)}, follow_redirects=False)
    assert signed_out.status_code == 303 and signed_out.headers["location"] == "/signin"
    assert client.get("/desk", follow_redirects=False).status_code == 303


def test_wrong_token_is_refused_next_to_the_field(client):
    response = sign_in(client, "nonsense")
    assert response.status_code == 401
    assert 'class="field-error"' in response.text and "not accepted" in response.text
    assert "fama_token" not in response.headers.get("set-cookie", "")


def test_wrong_role_gets_403_page(client):
    client.cookies.set("fama_token", issue_token(SETTINGS, role="commissioner", region="London"))
    response = client.get("/desk")
    assert response.status_code == 403 and "This page is for: keyworker." in response.text


def test_sign_in_never_redirects_off_site(client):
    token = issue_token(SETTINGS, role="keyworker", site="norwich")
    response = sign_in(client, token, next_url="//evil.example/")
    assert response.headers["location"] == "/"


def test_stylesheet_is_served(client):
    response = client.get("/static/fama.css")
    assert response.status_code == 200 and "--focus" in response.text


def signed_in_as(client) -> str:
    page = client.get("/desk", follow_redirects=False)
    return page.text if page.status_code == 200 else "not signed in"


@pytest.mark.parametrize("form", ["missing", "forged", "another browser's"])
def test_sign_in_without_this_browsers_form_token_is_refused(client, form):
    client.get("/signin")  # the browser has its form cookie
    other = TestClient(client.app)
    tokens = {"missing": None, "forged": "0" * 64, "another browser's": form_token(other.get("/signin"))}
    data = {"token": issue_token(SETTINGS, role="keyworker", site="norwich"), "next": "/desk"}
    if tokens[form]:
        data["csrf_token"] = tokens[form]
    response = client.post("/signin", data=data, follow_redirects=False)
    assert response.status_code == 403
    assert "reload the page and try again" in response.text and "Nothing has changed" in response.text
    assert "fama_token" not in response.headers.get("set-cookie", "")
    assert signed_in_as(client) == "not signed in"


def test_sign_in_from_another_site_cannot_switch_the_user(client):
    assert sign_in(client, issue_token(SETTINGS, role="keyworker", site="norwich")).status_code == 303
    attacker = issue_token(SETTINGS, role="keyworker", site="croydon")
    # Even with a valid form token (say, leaked), a browser saying the form came from elsewhere is refused.
    token = form_token(client.get("/signin"))
    for headers in (EVIL, {"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "same-site"}, {"Origin": "null"}):
        response = client.post("/signin", data={"token": attacker, "next": "/desk", "csrf_token": token},
                               headers=headers, follow_redirects=False)
        assert response.status_code == 403, headers
        assert "reload the page and try again" in response.text
        assert "fama_token" not in response.headers.get("set-cookie", "")
        assert "Hello norwich" in signed_in_as(client)
    same_origin = client.post("/signin", data={"token": attacker, "next": "/desk", "csrf_token": token},
                              headers={"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"}, follow_redirects=False)
    assert same_origin.status_code == 303 and "Hello croydon" in signed_in_as(client)


def test_sign_out_is_a_post_with_the_form_token(client):
    sign_in(client, issue_token(SETTINGS, role="keyworker", site="norwich"))
    page = client.get("/desk")
    assert 'action="/signin/out"' in page.text and 'method="post"' in page.text
    offered = client.get("/signin/out")  # an old link or an <img src>: shows the button, signs nobody out
    assert offered.status_code == 200 and "Sign out" in offered.text and form_token(offered)
    assert "Hello norwich" in signed_in_as(client)
    assert client.post("/signin/out", follow_redirects=False).status_code == 403
    assert client.post("/signin/out", data={"csrf_token": form_token(page)}, headers=EVIL).status_code == 403
    assert "Hello norwich" in signed_in_as(client)
    assert client.post("/signin/out", data={"csrf_token": form_token(page)}, follow_redirects=False).status_code == 303
    assert signed_in_as(client) == "not signed in"
    assert client.get("/signin/out", follow_redirects=False).headers["location"] == "/signin"


def test_signed_in_pages_and_the_sign_in_page_are_never_stored(client):
    assert client.get("/signin").headers["cache-control"] == "no-store"
    sign_in(client, issue_token(SETTINGS, role="keyworker", site="norwich"))
    assert client.get("/desk").headers["cache-control"] == "no-store"
    assert client.get("/static/fama.css").headers["cache-control"] == "no-store"  # anything to a signed-in browser
    assert "no-store" not in TestClient(client.app).get("/static/fama.css").headers.get("cache-control", "")


def test_pages_allow_no_inline_script_or_style(client):
    csp = client.get("/signin").headers["content-security-policy"]
    assert "unsafe-inline" not in csp and "http" not in csp
    assert "script-src 'self'" in csp and "style-src 'self'" in csp and "form-action 'self'" in csp
    for name in ("base.html", "login.html", "message.html", "signout.html"):
        source = (HERE / "templates" / name).read_text()
        assert "<style" not in source and "<script" not in source and "style=" not in source, name


def test_parse_date_reads_what_date_fields_send_and_what_people_type_and_refuses_the_rest():
    assert parse_date("2026-11-16") == parse_date(" 16/11/2026 ") == dt.date(2026, 11, 16)
    assert parse_date("") is None
    with pytest.raises(ValueError):
        parse_date("31/02/2026")
