"""Page sign-in with a token: redirect to sign in, refuse bad tokens and wrong roles."""

from __future__ import annotations

from typing import Annotated

import pytest
from fastapi import Depends, Request
from fastapi.testclient import TestClient

from shared.auth import Principal, Role, issue_token
from shared.pages import HERE, make_templates, require_page_roles, setup_pages
from shared.settings import ServiceSettings
from shared.web import make_app

SETTINGS = ServiceSettings(jwt_secret="page-test-secret-long-enough-for-hs256")


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
    signed_in = client.post("/signin", data={"token": token, "next": "/desk?status=requested"}, follow_redirects=False)
    assert signed_in.status_code == 303 and signed_in.headers["location"] == "/desk?status=requested"
    assert "httponly" in signed_in.headers["set-cookie"].lower()
    page = client.get("/desk")
    assert page.status_code == 200 and "Hello norwich" in page.text and "Signed in as keyworker" in page.text
    client.get("/signin/out")
    assert client.get("/desk", follow_redirects=False).status_code == 303


def test_wrong_token_is_refused_next_to_the_field(client):
    response = client.post("/signin", data={"token": "nonsense", "next": "/desk"})
    assert response.status_code == 401
    assert 'class="field-error"' in response.text and "not accepted" in response.text
    assert "fama_token" not in response.headers.get("set-cookie", "")


def test_wrong_role_gets_403_page(client):
    client.cookies.set("fama_token", issue_token(SETTINGS, role="commissioner", region="London"))
    response = client.get("/desk")
    assert response.status_code == 403 and "This page is for: keyworker." in response.text


def test_sign_in_never_redirects_off_site(client):
    token = issue_token(SETTINGS, role="keyworker", site="norwich")
    response = client.post("/signin", data={"token": token, "next": "//evil.example/"}, follow_redirects=False)
    assert response.headers["location"] == "/"


def test_stylesheet_is_served(client):
    response = client.get("/static/fama.css")
    assert response.status_code == 200 and "--focus" in response.text
