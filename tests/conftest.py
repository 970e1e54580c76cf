"""Test run set-up: real Postgres and Redis, fresh databases and a private Redis key space.

The environment is set in ``pytest_configure`` before any service module is imported,
so every service (and every worker process a test starts) uses this run's databases.
"""

from __future__ import annotations

import importlib
import os
import uuid

import pytest
import redis
from sqlalchemy import text

from tests.support import servers
from tests.support.processes import celery_worker, scheduler

SERVICES = ("directory", "referrals", "notifications")
RUN_ID = uuid.uuid4().hex[:8]
STATE: dict = {}


def pytest_configure(config):
    if "postgres_admin" in STATE:
        return
    try:
        STATE["postgres_admin"] = servers.find_postgres()
        STATE["redis_url"] = servers.find_redis()
    except RuntimeError as exc:
        raise pytest.UsageError(str(exc)) from exc
    os.environ["FAMA_ENV"] = "test"
    os.environ["REDIS_URL"] = STATE["redis_url"]
    os.environ["REDIS_KEY_PREFIX"] = f"fama-test-{RUN_ID}:"
    os.environ["CELERY_VISIBILITY_TIMEOUT"] = "15"
    os.environ["OUTBOX_SWEEP_SECONDS"] = "0.5"
    os.environ["OUTBOX_RESEND_SECONDS"] = "20"
    os.environ["LOG_LEVEL"] = "INFO"
    # Tests call the public endpoints far faster than any person; the limiter has its own test.
    os.environ["PUBLIC_RATE_LIMIT_PER_MINUTE"] = "100000"
    os.environ.pop("JWT_JWKS_URL", None)
    STATE["databases"] = {}
    for service in SERVICES:
        name = f"fama_test_{RUN_ID}_{service}"
        url = servers.create_database(STATE["postgres_admin"], name)
        STATE["databases"][service] = (name, url)
        os.environ[f"{service.upper()}_DATABASE_URL"] = url
    for service in SERVICES:
        importlib.import_module(f"services.{service}.runtime").runtime.migrate()


def pytest_report_header(config):
    """One line naming the servers in use (CI checks it says "bundled" on its bare-machine run)."""
    return f"FAMA test servers: postgres={servers.in_use.get('postgres')}; redis={servers.in_use.get('redis')}"


def pytest_unconfigure(config):
    for service, (name, _url) in STATE.get("databases", {}).items():
        try:
            rt = importlib.import_module(f"services.{service}.runtime").runtime
            rt.reset_caches()
        except Exception:
            pass
        servers.drop_database(STATE["postgres_admin"], name)
    if "redis_url" in STATE:
        client = redis.Redis.from_url(STATE["redis_url"])
        for key in client.scan_iter(match=f"fama-test-{RUN_ID}:*", count=1000):
            client.delete(key)


def runtime_of(service: str):
    return importlib.import_module(f"services.{service}.runtime").runtime


def truncate_all(service: str) -> None:
    rt = runtime_of(service)
    tables = [t.name for t in rt.metadata.sorted_tables]
    with rt.engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))


def flush_redis() -> None:
    client = redis.Redis.from_url(STATE["redis_url"])
    for key in client.scan_iter(match=f"fama-test-{RUN_ID}:*", count=1000):
        client.delete(key)


@pytest.fixture
def clean_state():
    """Empty every service's tables and this run's Redis keys before the test."""
    for service in SERVICES:
        truncate_all(service)
    flush_redis()
    yield


@pytest.fixture
def redis_client():
    return redis.Redis.from_url(STATE["redis_url"], decode_responses=True)


@pytest.fixture
def redis_prefix() -> str:
    return os.environ["REDIS_KEY_PREFIX"]


@pytest.fixture
def postgres_admin_url() -> str:
    return STATE["postgres_admin"]


@pytest.fixture
def processes():
    """Start real service processes; every one is stopped after the test."""
    started = []

    class Starter:
        def worker(self, service, queues=None, **kw):
            proc = celery_worker(service, queues, **kw).start()
            started.append(proc)
            return proc

        def scheduler(self, service, **kw):
            proc = scheduler(service, **kw).start()
            started.append(proc)
            return proc

        def add(self, proc):
            started.append(proc.start())
            return proc

    yield Starter()
    for proc in reversed(started):
        proc.stop()
