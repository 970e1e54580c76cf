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
