"""The Postgres pool pings a connection only when it has been idle, and replaces one the database dropped."""

from __future__ import annotations

import time
import uuid

import psycopg
import pytest
from sqlalchemy import text

from shared.db import make_engine
from tests.support.servers import create_database, drop_database


@pytest.fixture
def database(request, postgres_admin_url):
    name = f"fama_pool_{uuid.uuid4().hex[:8]}"
    url = create_database(postgres_admin_url, name)
    request.addfinalizer(lambda: drop_database(postgres_admin_url, name))
    return url, postgres_admin_url


def pings_of(engine) -> list[int]:
    pings, real = [], engine.dialect.do_ping

    def counted(dbapi_connection):
        pings.append(1)
        return real(dbapi_connection)

    engine.dialect.do_ping = counted
    return pings


def backend(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT pg_backend_pid()")).scalar_one()


def test_a_connection_used_a_moment_ago_goes_out_without_a_ping(database):
    engine = make_engine(database[0], ping_after_idle=60)
    pings = pings_of(engine)
    first = backend(engine)
    assert [backend(engine) for _ in range(5)] == [first] * 5  # the same pooled connection each time
    assert pings == []
    engine.dispose()


def test_an_idle_connection_the_database_dropped_is_replaced_before_use(database):
    url, admin = database
    engine = make_engine(url, ping_after_idle=0)  # every reuse counts as idle here
    pings = pings_of(engine)
    first = backend(engine)
    with psycopg.connect(admin.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        assert conn.execute("SELECT pg_terminate_backend(%s)", (first,)).fetchone()[0] is True
        deadline = time.monotonic() + 30  # termination is a signal: wait until the backend has gone
        while conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (first,)).fetchone()[0]:
            assert time.monotonic() < deadline, "the backend was not terminated"
            time.sleep(0.05)
    second = backend(engine)  # no error: the ping found it dead and the pool connected anew
    assert second != first
    assert len(pings) == 1
    engine.dispose()
