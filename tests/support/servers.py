"""Find real Postgres and Redis servers for the test run.

Order: TEST_POSTGRES_URL / TEST_REDIS_URL; the local servers on their default ports;
testcontainers where a Docker engine runs; server binaries started here. If none works
the run stops saying what to install.
"""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time

import psycopg
import redis

LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
LOCAL_REDIS = "redis://127.0.0.1:6379/0"


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


def find_postgres() -> str:
    """A libpq URL of a Postgres server where this run may create databases."""
    url = os.environ.get("TEST_POSTGRES_URL")
    if url:
        url = url.replace("postgresql+psycopg://", "postgresql://")
        if not _postgres_answers(url):
            raise RuntimeError(f"TEST_POSTGRES_URL={url} does not answer")
        return url
    if _port_open("127.0.0.1", 5432) and _postgres_answers(LOCAL_POSTGRES):
        return LOCAL_POSTGRES
    if _docker_engine():
        from testcontainers.postgres import PostgresContainer

        container = PostgresContainer("postgres:16-alpine", driver=None).start()
        atexit.register(container.stop)
        return container.get_connection_url()
    bindirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    initdb = shutil.which("initdb") or next((f"{d}/initdb" for d in bindirs if os.path.exists(f"{d}/initdb")), None)
    if initdb:
        return _start_postgres_binary(os.path.dirname(initdb))
    raise RuntimeError(
        "No PostgreSQL for the tests: set TEST_POSTGRES_URL, run a server on 127.0.0.1:5432, "
        "run a Docker engine, or install PostgreSQL (Debian/Ubuntu: apt-get install postgresql)."
    )


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
    url = os.environ.get("TEST_REDIS_URL")
    if url:
        if not _redis_answers(url):
            raise RuntimeError(f"TEST_REDIS_URL={url} does not answer")
        return url
    if _port_open("127.0.0.1", 6379) and _redis_answers(LOCAL_REDIS):
        return LOCAL_REDIS
    if _docker_engine():
        from testcontainers.redis import RedisContainer

        container = RedisContainer("redis:7-alpine").start()
        atexit.register(container.stop)
        return f"redis://{container.get_container_host_ip()}:{container.get_exposed_port(6379)}/0"
    binary = shutil.which("redis-server")
    if binary:
        return start_redis_binary(binary)[0]
    raise RuntimeError(
        "No Redis for the tests: set TEST_REDIS_URL, run a server on 127.0.0.1:6379, run a Docker engine, "
        "or install Redis (Debian/Ubuntu: apt-get install redis-server)."
    )


def start_redis_binary(binary: str = "redis-server", *, appendonly: bool = False) -> tuple[str, subprocess.Popen, str]:
    """Start a private redis-server; returns (url, process, data dir)."""
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
    raise RuntimeError("redis-server did not start")


def create_database(admin_url: str, name: str) -> str:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://", 1)


def drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
