"""Bearer tokens: 401 without or with a bad, expired or too long-lived token, 403 for the wrong role
or site; the bodies say what to do, never what the decoder said."""

from __future__ import annotations

import datetime as dt

import jwt
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from fama.cli import app as cli
from shared.auth import (
    SIGN_IN_AGAIN,
    CurrentPrincipal,
    Role,
    SiteStaff,
    TokenTooLong,
    decode_token,
    ensure_site,
    issue_token,
    require_roles,
)
from shared.settings import ServiceSettings

SETTINGS = ServiceSettings(jwt_secret="test-secret-that-is-long-enough-for-hs256")


@pytest.fixture
def client() -> TestClient:
    app = FastAPI()
    app.state.settings = SETTINGS

    @app.get("/me")
    def me(principal: CurrentPrincipal):
        return principal.model_dump()

    @app.get("/commissioners")
    def commissioners(_p=require_roles_dep(Role.commissioner, Role.admin)):
        return {"ok": True}

    @app.get("/sites/{site_id}/things")
    def site_things(site_id: str, principal: SiteStaff):
        ensure_site(principal, site_id)
        return {"site": site_id}

    return TestClient(app)


def require_roles_dep(*roles):
    from fastapi import Depends

    return Depends(require_roles(*roles))


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_token_round_trip_carries_role_site_and_region():
    token = issue_token(SETTINGS, role="keyworker", site="croydon", region="London", subject="kw-1")
    principal = decode_token(SETTINGS, token)
    assert (principal.subject, principal.role, principal.site, principal.region) == ("kw-1", Role.keyworker, "croydon",
                                                                                      "London")


def test_missing_token_is_401(client):
    response = client.get("/me")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("token", [
    "not-a-jwt",
    issue_token(ServiceSettings(jwt_secret="another-secret-entirely-long-enough-xx"), role="admin"),
    issue_token(SETTINGS, role="admin", ttl=dt.timedelta(seconds=-5)),
    jwt.encode({"sub": "x", "role": "admin", "exp": 9999999999, "aud": "fama", "iss": "fama"}, "k" * 40,
               algorithm="HS256"),
])
def test_bad_expired_or_forged_token_is_401(client, token):
    response = client.get("/me", headers=bearer(token))
    assert response.status_code == 401
    assert response.json() == {"detail": SIGN_IN_AGAIN}


def signed(claims: dict, secret: str = SETTINGS.jwt_secret) -> str:
    return jwt.encode({"sub": "x", "role": "admin", "aud": "fama", "iss": "fama", **claims}, secret, algorithm="HS256")


def in_hours(hours: float) -> int:
    return int((dt.datetime.now(dt.UTC) + dt.timedelta(hours=hours)).timestamp())


def test_unknown_role_is_401_without_the_decoders_words(client):
    response = client.get("/me", headers=bearer(signed({"role": "superuser", "exp": in_hours(1)})))
    assert response.status_code == 401
    assert response.json()["detail"] == SIGN_IN_AGAIN
    assert "superuser" not in response.text and "Input should be" not in response.text
    assert "sign in again" in client.get("/me").json()["detail"]  # no token at all


def test_a_100_year_token_is_refused(client):
    now = int(dt.datetime.now(dt.UTC).timestamp())
    century = signed({"iat": now, "exp": in_hours(24 * 365 * 100)})
    with pytest.raises(TokenTooLong):
        decode_token(SETTINGS, century)
    response = client.get("/me", headers=bearer(century))
    assert response.status_code == 401 and response.json()["detail"] == SIGN_IN_AGAIN
    # Without iat its lifetime is counted from now; a backdated iat counts from then.
    assert client.get("/me", headers=bearer(signed({"exp": in_hours(13)}))).status_code == 401
    assert client.get("/me", headers=bearer(signed({"iat": now - 3600 * 10, "exp": in_hours(3)}))).status_code == 401
    assert client.get("/me", headers=bearer(signed({"exp": in_hours(11)}))).status_code == 200
    assert client.get("/me", headers=bearer(signed({"iat": now, "exp": in_hours(12)}))).status_code == 200


def test_the_maximum_lifetime_is_a_setting():
    short = ServiceSettings(jwt_secret=SETTINGS.jwt_secret, jwt_max_lifetime_hours=1)
    two_hours = signed({"exp": in_hours(2)})
    assert decode_token(SETTINGS, two_hours).role == Role.admin
    with pytest.raises(TokenTooLong):
        decode_token(short, two_hours)
    with pytest.raises(ValueError, match="JWT_MAX_LIFETIME_HOURS"):
        issue_token(short, role="admin", ttl=dt.timedelta(hours=2))
    claims = jwt.decode(issue_token(short, role="admin"), options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 3600


@pytest.mark.parametrize("claims", [{}, {"exp": "soon"}, {"exp": in_hours(1), "iat": "earlier"}])
def test_tokens_without_a_numeric_exp_are_refused(client, claims):
    response = client.get("/me", headers=bearer(signed(claims)))
    assert response.status_code == 401 and response.json()["detail"] == SIGN_IN_AGAIN


def test_wrong_role_is_403(client):
    token = issue_token(SETTINGS, role="keyworker", site="croydon")
    response = client.get("/commissioners", headers=bearer(token))
    assert response.status_code == 403
    assert "commissioner" in response.json()["detail"]
    assert response.json()["detail"].startswith("your role (keyworker) may not do this")
    assert client.get("/commissioners", headers=bearer(issue_token(SETTINGS, role="commissioner",
                                                                    region="London"))).status_code == 200


def test_keyworker_acts_only_for_own_site(client):
    token = issue_token(SETTINGS, role="keyworker", site="croydon")
    assert client.get("/sites/croydon/things", headers=bearer(token)).status_code == 200
    other_site = client.get("/sites/sheffield/things", headers=bearer(token))
    assert other_site.status_code == 403 and "your role may not act for another site" in other_site.json()["detail"]
    admin = issue_token(SETTINGS, role="admin")
    assert client.get("/sites/sheffield/things", headers=bearer(admin)).status_code == 200
    commissioner = issue_token(SETTINGS, role="commissioner", region="London")
    assert client.get("/sites/croydon/things", headers=bearer(commissioner)).status_code == 403


def test_rs256_tokens_are_checked_against_a_jwks(tmp_path):
    """Production: tokens signed by an OIDC provider, verified with its published keys."""
    import http.server
    import json
    import threading

    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="k1", use="sig", alg="RS256")
    body = json.dumps({"keys": [jwk]}).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            """Quiet: the test output is not the place for access logs."""

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings = ServiceSettings(jwt_jwks_url=f"http://127.0.0.1:{server.server_port}/jwks", jwt_issuer="https://idp",
                                   jwt_audience="fama")
        claims = {"sub": "u1", "role": "site_lead", "site": "kendal", "iss": "https://idp", "aud": "fama",
                  "exp": dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)}
        token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "k1"})
        assert decode_token(settings, token).site == "kendal"
        with pytest.raises(jwt.PyJWTError):
            decode_token(settings, issue_token(SETTINGS, role="admin"))  # HS256 is not accepted there
    finally:
        server.shutdown()


def test_cli_issues_tokens_the_services_accept():
    result = CliRunner().invoke(cli, ["token", "--role", "site_lead", "--site", "gateshead"])
    assert result.exit_code == 0, result.output
    principal = decode_token(ServiceSettings(), result.output.strip())
    assert principal.role == Role.site_lead and principal.site == "gateshead"
    refused = CliRunner().invoke(cli, ["token", "--role", "keyworker"])
    assert refused.exit_code != 0


def test_cli_never_mints_a_token_longer_than_the_maximum(monkeypatch):
    too_long = CliRunner().invoke(cli, ["token", "--role", "admin", "--hours", "876000"])
    assert too_long.exit_code != 0 and "JWT_MAX_LIFETIME_HOURS" in too_long.output
    assert CliRunner().invoke(cli, ["token", "--role", "admin", "--hours", "0"]).exit_code != 0
    monkeypatch.setenv("JWT_MAX_LIFETIME_HOURS", "2")
    assert CliRunner().invoke(cli, ["token", "--role", "admin", "--hours", "3"]).exit_code != 0
    result = CliRunner().invoke(cli, ["token", "--role", "admin"])
    assert result.exit_code == 0, result.output
    claims = jwt.decode(result.output.strip(), options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 2 * 3600
