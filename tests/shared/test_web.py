"""Every service answers /healthz, /readyz and /metrics, and refuses oversized bodies."""

from __future__ import annotations

import importlib

import pytest
from fastapi.testclient import TestClient

from shared.db import make_engine
from shared.settings import ServiceSettings
from shared.web import make_app


@pytest.mark.parametrize("service", ["directory", "referrals", "notifications"])
def test_service_is_healthy_ready_and_measured(service):
    app = importlib.import_module(f"services.{service}.api").app
    client = TestClient(app)
    assert client.get("/healthz").json() == {"status": "ok", "service": service}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "redis": "ok"}
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert 'http_requests_total{method="GET",route="/readyz",status="200"}' in metrics.text
    assert client.get("/openapi.json").json()["info"]["title"].startswith("FAMA")
    assert client.get("/healthz").headers["x-content-type-options"] == "nosniff"


def test_not_ready_when_database_and_redis_are_down(tmp_path):
    settings = ServiceSettings(redis_url="redis://127.0.0.1:1/0")
    engine = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    client = TestClient(make_app(service="x", settings=settings, engine=lambda: engine, title="FAMA x"))
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["database"].startswith("unavailable")
    assert response.json()["checks"]["redis"].startswith("unavailable")


def test_a_warm_up_that_fails_never_stops_the_app_from_starting_and_saying_what_is_wrong():
    """The warm-up calls run before the first request; the database may be down then: the app starts
    all the same and /readyz says what is unavailable."""
    settings = ServiceSettings(redis_url="redis://127.0.0.1:1/0")
    engine = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    app = make_app(service="x", settings=settings, engine=lambda: engine, title="FAMA x")
    warmed = []

    def reads_the_database():
        with engine.connect():
            warmed.append("never")

    app.state.warm_up += [reads_the_database, lambda: warmed.append("after a failed one")]
    with TestClient(app) as client:  # runs the lifespan, as uvicorn does
        assert warmed == ["after a failed one"]
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").json()["checks"]["database"].startswith("unavailable")


def test_oversized_request_is_413():
    settings = ServiceSettings(max_request_bytes=1000)
    app = make_app(service="x", settings=settings, engine=lambda: None, title="FAMA x")

    @app.post("/echo")
    def echo(body: dict):
        return body

    client = TestClient(app)
    response = client.post("/echo", content=b'{"a": "' + b"x" * 2000 + b'"}', headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert "1000 bytes" in response.json()["detail"]

    def chunks():  # no Content-Length: sent chunked
        yield b'{"a": "'
        for _ in range(20):
            yield b"x" * 100
        yield b'"}'

    chunked = client.post("/echo", content=chunks(), headers={"content-type": "application/json"})
    assert chunked.status_code == 413
    small = client.post("/echo", json={"a": "fine"})
    assert small.status_code == 200 and small.json() == {"a": "fine"}


def test_misspelt_query_parameter_is_reported():
    app = make_app(service="x", settings=ServiceSettings(), engine=lambda: None, title="FAMA x")

    @app.get("/things")
    def things(fellowship: str | None = None):
        return {"fellowship": fellowship}

    client = TestClient(app)
    assert client.get("/things?fellowship=aa").json() == {"fellowship": "aa"}
    response = client.get("/things?fellowhsip=aa")
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "fellowhsip"


def test_405_names_every_method_of_the_path():
    app = make_app(service="x", settings=ServiceSettings(), engine=lambda: None, title="FAMA x")

    @app.get("/things")
    def list_things():
        return []

    @app.post("/things")
    def add_thing():
        return {}

    response = TestClient(app).delete("/things")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, POST"


def rate_limited_search(settings: ServiceSettings) -> TestClient:
    from shared.web import PublicRateLimit

    app = make_app(service="x", settings=settings, engine=lambda: None, title="FAMA x")

    @app.get("/search", dependencies=[PublicRateLimit])
    def search():
        return {"ok": True}

    return TestClient(app)


def test_public_endpoints_are_rate_limited_per_client(redis_prefix):
    import uuid

    client = rate_limited_search(ServiceSettings(public_rate_limit_per_minute=3,
                                                 redis_key_prefix=f"{redis_prefix}{uuid.uuid4().hex[:6]}:"))
    assert [client.get("/search").status_code for _ in range(3)] == [200, 200, 200]
    limited = client.get("/search")
    assert limited.status_code == 429
    assert "at most 3 a minute" in limited.json()["detail"]
    assert 0 < int(limited.headers["retry-after"]) <= 60
    assert client.get("/healthz").status_code == 200  # only the limited endpoints count


def test_limiter_lets_requests_through_when_redis_is_down():
    client = rate_limited_search(ServiceSettings(public_rate_limit_per_minute=1, redis_url="redis://127.0.0.1:1/0"))
    assert [client.get("/search").status_code for _ in range(3)] == [200, 200, 200]


def production_settings(**kw) -> ServiceSettings:
    """Production settings as the browser protections read them (secrets are checked elsewhere)."""
    return ServiceSettings.model_construct(environment="production", **kw)


def test_cross_site_unsafe_requests_are_refused_and_do_nothing():
    app = make_app(service="x", settings=ServiceSettings(), engine=lambda: None, title="FAMA x")
    done = []

    @app.post("/things")
    def add_thing():
        done.append(1)
        return {"added": True}

    client = TestClient(app)
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
                    {"Origin": "null"}, {"Origin": "http://testserver.evil.example"}):
        response = client.post("/things", json={}, headers=headers)
        assert response.status_code == 403, headers
        assert "cross-site request refused" in response.json()["detail"]
    assert done == []
    for headers in ({}, {"Origin": "http://testserver"}, {"Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "none"}):
        assert client.post("/things", json={}, headers=headers).status_code == 200, headers
    assert len(done) == 4
    assert client.get("/healthz", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 200  # reading is not refused


def test_responses_to_credentials_are_never_stored():
    client = TestClient(make_app(service="x", settings=ServiceSettings(), engine=lambda: None, title="FAMA x"))
    assert client.get("/healthz", headers={"Authorization": "Bearer anything"}).headers["cache-control"] == "no-store"
    assert "cache-control" not in client.get("/healthz").headers


def test_production_sends_hsts_a_strict_csp_and_no_api_explorer():
    client = TestClient(make_app(service="x", settings=production_settings(), engine=lambda: None, title="FAMA x"))
    response = client.get("/healthz")
    assert response.headers["strict-transport-security"].startswith("max-age=31536000")
    csp = response.headers["content-security-policy"]
    assert "unsafe-inline" not in csp and "cdn" not in csp and "script-src 'self';" in csp
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert client.get(path).status_code == 404, path


def test_development_api_explorer_has_its_own_policy():
    client = TestClient(make_app(service="x", settings=ServiceSettings(), engine=lambda: None, title="FAMA x"))
    assert "strict-transport-security" not in client.get("/healthz").headers
    docs = client.get("/docs")
    assert docs.status_code == 200 and "https://cdn.jsdelivr.net" in docs.headers["content-security-policy"]
    assert "unsafe-inline" not in client.get("/healthz").headers["content-security-policy"]
    assert client.get("/openapi.json").status_code == 200


def test_forged_forwarded_for_from_an_untrusted_peer_gets_no_fresh_bucket(redis_prefix, monkeypatch):
    import uuid

    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.0.0.1")
    client = rate_limited_search(ServiceSettings(public_rate_limit_per_minute=2,
                                                 redis_key_prefix=f"{redis_prefix}{uuid.uuid4().hex[:6]}:"))
    statuses = [client.get("/search", headers={"X-Forwarded-For": f"203.0.113.{n}"}).status_code for n in range(4)]
    assert statuses == [200, 200, 429, 429]


def test_behind_a_trusted_proxy_each_client_has_its_own_bucket(redis_prefix, monkeypatch):
    import uuid

    from shared.web import PublicRateLimit

    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "127.0.0.1, 10.0.0.0/8")
    app = make_app(service="x", settings=ServiceSettings(public_rate_limit_per_minute=2,
                                                         redis_key_prefix=f"{redis_prefix}{uuid.uuid4().hex[:6]}:"),
                   engine=lambda: None, title="FAMA x")

    @app.get("/search", dependencies=[PublicRateLimit])
    def search():
        return {"ok": True}

    proxy = TestClient(app, client=("10.1.2.3", 40000))
    first = [proxy.get("/search", headers={"X-Forwarded-For": "198.51.100.7"}).status_code for _ in range(3)]
    second = [proxy.get("/search", headers={"X-Forwarded-For": "198.51.100.8"}).status_code for _ in range(3)]
    assert first == [200, 200, 429] and second == [200, 200, 429]
    # A client cannot escape by prepending its own X-Forwarded-For: the proxy appends the real address.
    spoofed = proxy.get("/search", headers={"X-Forwarded-For": "192.0.2.1, 198.51.100.7"})
    assert spoofed.status_code == 429
