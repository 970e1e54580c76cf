"""The production compose file and the local Procfile describe the same processes."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from shared import queues

ROOT = Path(__file__).resolve().parents[1]
SECRETS = {
    "JWT_SECRET": "s3cret-for-the-test", "CONTACT_TRANSIT_KEYS": "k1", "POSTGRES_PASSWORD": "pw",
    "REFERRALS_ENCRYPTION_KEYS": "k2", "NOTIFICATIONS_ENCRYPTION_KEYS": "k3", "NOTIFICATIONS_HASH_KEY": "k4",
    "DIRECTORY_ENCRYPTION_KEYS": "k5", "NOTIFICATIONS_CALLBACK_TOKEN": "k6",
}


def compose_config(env: dict[str, str]) -> subprocess.CompletedProcess:
    binary = shutil.which("docker-compose")
    assert binary, "docker-compose is not installed: run `make tools` (Debian package docker-compose)"
    clean = {k: v for k, v in os.environ.items() if k not in SECRETS}
    return subprocess.run([binary, "-f", str(ROOT / "docker-compose.yml"), "config"], cwd=ROOT,
                          env={**clean, **env}, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def compose() -> dict:
    result = compose_config(SECRETS)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_compose_runs_each_service_api_and_worker_separately(compose):
    services = compose["services"]
    for name in queues.SERVICES:
        assert f"{name}-api" in services
        worker = services[f"{name}-worker"]
        command = worker["command"]
        assert command[:4] == ["celery", "-A", f"services.{name}.tasks", "worker"]
        assert command[command.index("-Q") + 1] == queues.events_queue(name)
    sender = services["notifications-sender"]["command"]
    assert sender[sender.index("-Q") + 1] == queues.NOTIFICATIONS_SEND
    assert services["notifications-scheduler"]["command"] == ["fama", "notifications", "scheduler"]
    assert "flower" in services
    images = {services[s].get("image") for s in services if s not in ("postgres", "redis")}
    assert images == {"fama:latest"}


def test_redis_keeps_an_append_only_log_and_never_evicts(compose):
    command = " ".join(compose["services"]["redis"]["command"])
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command


def test_every_long_running_container_has_a_health_check(compose):
    for name in ("postgres", "redis", "directory-api", "referrals-api", "notifications-api",
                 "directory-worker", "referrals-worker", "notifications-worker", "notifications-sender"):
        assert "healthcheck" in compose["services"][name], name


def test_each_service_gets_its_own_database(compose):
    env = compose["services"]["directory-api"]["environment"]
    urls = {env[f"{n.upper()}_DATABASE_URL"] for n in queues.SERVICES}
    assert len(urls) == 3
    assert all(u.startswith("postgresql+psycopg://") for u in urls)


def test_missing_secret_is_named():
    result = compose_config({k: v for k, v in SECRETS.items() if k != "JWT_SECRET"})
    assert result.returncode != 0
    assert "JWT_SECRET" in result.stderr


def test_procfile_runs_the_same_processes_locally():
    procfile = dict(line.split(":", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line.strip())
    for name in queues.SERVICES:
        assert f"-Q {queues.events_queue(name)}" in procfile[f"{name}-worker"]
        assert f"services.{name}.api:app" in procfile[f"{name}-api"]
        assert procfile[f"{name}-scheduler"].strip() == f"fama {name} scheduler"
    assert f"-Q {queues.NOTIFICATIONS_SEND}" in procfile["notifications-sender"]


def test_compose_sets_only_settings_the_services_read(compose):
    """A misspelt variable in the compose file would silently fall back to a default."""
    from fama.cli import settings_table

    known = {row[0] for row in settings_table()} | {"FORWARDED_ALLOW_IPS", "CELERY_APP", "CELERY_NODE"}
    for name, service in compose["services"].items():
        if name in ("postgres", "redis"):
            continue
        unknown = set(service.get("environment", {})) - known
        assert not unknown, f"{name}: {sorted(unknown)}"
