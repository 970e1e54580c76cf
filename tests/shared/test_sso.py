"""The claims → FAMA role, site and region mapping, and the single sign-on settings (pure logic)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.auth import NoFamaRole, Role, principal_from_claims
from shared.settings import ServiceSettings

ENTRA_LIKE = ServiceSettings(
    oidc_role_claim="roles", oidc_role_map={"FAMA.Keyworker": "keyworker", "FAMA.SiteLead": "site_lead",
                                            "FAMA.Admin": "admin"},
    oidc_site_claim="groups", oidc_site_map={"6f1c-croydon": "croydon", "0b2e-kendal": "kendal"},
    oidc_region_claim="groups", oidc_region_map={"77aa-london": "london"})


def test_mapped_app_roles_and_groups_give_role_site_and_region():
    principal = principal_from_claims(ENTRA_LIKE, {"sub": "u1", "roles": ["FAMA.Keyworker", "FAMA.SiteLead"],
                                                   "groups": ["6f1c-croydon", "77aa-london", "unrelated"]})
    assert (principal.role, principal.site, principal.region) == (Role.site_lead, "croydon", "london")


def test_unmapped_values_give_no_role_and_the_reason_names_the_claim():
    with pytest.raises(NoFamaRole, match="no FAMA role .*'roles' claim"):
        principal_from_claims(ENTRA_LIKE, {"sub": "u1", "roles": ["Finance.Reader"], "groups": ["6f1c-croydon"]})


def test_a_keyworker_needs_exactly_one_site():
    with pytest.raises(NoFamaRole, match="no FAMA site"):
        principal_from_claims(ENTRA_LIKE, {"sub": "u1", "roles": "FAMA.Keyworker"})
    with pytest.raises(NoFamaRole, match="more than one FAMA site"):
        principal_from_claims(ENTRA_LIKE, {"sub": "u1", "roles": ["FAMA.Keyworker"],
                                           "groups": ["6f1c-croydon", "0b2e-kendal"]})


def test_an_admin_needs_no_site_and_an_empty_map_takes_values_as_they_are():
    assert principal_from_claims(ENTRA_LIKE, {"sub": "u1", "roles": ["FAMA.Admin"]}).role == Role.admin
    plain = principal_from_claims(ServiceSettings(), {"sub": "u2", "role": "commissioner", "region": "north-west"})
    assert (plain.role, plain.region) == (Role.commissioner, "north-west")
    with pytest.raises(NoFamaRole):
        principal_from_claims(ServiceSettings(), {"sub": "u3", "role": "superuser"})


def test_an_issuer_without_a_client_id_is_refused_and_a_role_map_only_names_fama_roles():
    with pytest.raises(ValidationError, match="OIDC_CLIENT_ID"):
        ServiceSettings(oidc_issuer="https://login.example/tenant/v2.0")
    with pytest.raises(ValidationError):
        ServiceSettings(oidc_role_map={"FAMA.Keyworker": "superuser"})


def test_production_wants_an_https_issuer_and_a_day_at_most_per_session():
    settings = ServiceSettings(oidc_issuer="http://idp.example", oidc_client_id="fama", session_hours=30)
    problems = settings.production_problems()
    assert "OIDC_ISSUER must be an https:// address" in problems
    assert any(p.startswith("SESSION_HOURS is above") for p in problems)
    ok = ServiceSettings(oidc_issuer="https://idp.example", oidc_client_id="fama").production_problems()
    assert not [p for p in ok if p.startswith(("OIDC_", "SESSION_"))]


SIGN_ON = ServiceSettings(oidc_issuer="http://127.0.0.1:9", oidc_client_id="fama", oidc_provider_name="Croydon Council")


def _sign_on_app():
    """Pages signing in at a provider on the discard port, where nothing answers."""
    from fastapi.testclient import TestClient

    from shared.pages import HERE, make_templates, setup_pages
    from shared.web import make_app

    app = make_app(service="referrals", settings=SIGN_ON, engine=lambda: None, title="FAMA test")
    setup_pages(app, make_templates(HERE / "templates"))
    return TestClient(app)


def test_with_single_sign_on_the_sign_in_page_offers_the_provider_and_refuses_pasted_tokens():
    from shared.auth import issue_token
    from shared.pages import _token_for

    client = _sign_on_app()
    page = client.get("/signin?next=/desk")
    assert 'href="/signin/start?next=/desk"' in page.text and "Sign in with Croydon Council" in page.text
    assert 'name="token"' not in page.text
    assert "form-action 'self' http://127.0.0.1:9" in page.headers["content-security-policy"]
    nonce = "n" * 10 + "0123456789abcdef"
    client.cookies.set("fama_csrf", nonce)
    token = issue_token(ServiceSettings(), role="admin")
    refused = client.post("/signin", data={"token": token, "next": "/desk", "csrf_token": _token_for(SIGN_ON, nonce)},
                          follow_redirects=False)
    assert refused.status_code == 400
    assert "signs you in through Croydon Council, not with a pasted token" in refused.text
    assert "fama_token" not in refused.headers.get("set-cookie", "")


def test_an_unreachable_provider_is_a_clear_503_and_signs_no_one_in():
    client = _sign_on_app()
    response = client.get("/signin/start?next=/desk", follow_redirects=False)
    assert response.status_code == 503
    assert "Croydon Council cannot be reached at the moment" in response.text
    assert client.get("/signin/callback?code=x&state=y").status_code == 400
