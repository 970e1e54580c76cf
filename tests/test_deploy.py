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
    "DIRECTORY_ENCRYPTION_KEYS": "k5", "NOTIFICATIONS_CALLBACK_TOKEN": "k6", "REDIS_PASSWORD": "redis-pw",
    "DIRECTORY_EVENT_KEYS": "e1", "REFERRALS_EVENT_KEYS": "e2", "NOTIFICATIONS_EVENT_KEYS": "e3",
}
APP_ROLES = ("migrate", "api", "worker", "scheduler", "sender")


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
    for name in queues.SERVICES:
        assert services[f"{name}-migrate"]["command"] == ["fama", name, "migrate"]
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
    urls = {compose["services"][f"{n}-api"]["environment"][f"{n.upper()}_DATABASE_URL"] for n in queues.SERVICES}
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

    known = {row[0] for row in settings_table()} | {"FORWARDED_ALLOW_IPS", "CELERY_APP", "CELERY_NODE",
                                                   "FLOWER_BASIC_AUTH"}
    for name, service in compose["services"].items():
        if name in ("postgres", "redis"):
            continue
        unknown = set(service.get("environment", {})) - known
        assert not unknown, f"{name}: {sorted(unknown)}"


def test_redis_requires_a_password_and_every_client_sends_it(compose):
    from urllib.parse import urlsplit

    redis = compose["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--requirepass") + 1] == SECRETS["REDIS_PASSWORD"]
    assert redis["environment"]["REDISCLI_AUTH"] == SECRETS["REDIS_PASSWORD"], "the health check must authenticate"
    for name, service in compose["services"].items():
        url = service.get("environment", {}).get("REDIS_URL")
        if name not in ("postgres", "redis"):
            assert url, f"{name} has no REDIS_URL"
            assert urlsplit(url).password == SECRETS["REDIS_PASSWORD"], name


def test_redis_over_tls_is_one_setting():
    result = compose_config({**SECRETS, "REDIS_SCHEME": "rediss", "REDIS_HOST": "cache.example.org"})
    assert result.returncode == 0, result.stderr
    env = yaml.safe_load(result.stdout)["services"]["referrals-worker"]["environment"]
    assert env["REDIS_URL"] == "rediss://:redis-pw@cache.example.org:6379/0"


def test_missing_redis_password_is_named():
    result = compose_config({k: v for k, v in SECRETS.items() if k != "REDIS_PASSWORD"})
    assert result.returncode != 0
    assert "REDIS_PASSWORD" in result.stderr


def test_flower_is_opt_in_asks_for_a_login_and_is_not_published(compose):
    flower = compose["services"]["flower"]
    assert flower["profiles"] == ["monitoring"], "Flower starts only when asked for"
    for port in flower.get("ports", []):
        published = port if isinstance(port, str) else f"{port.get('host_ip', '')}:{port.get('published')}"
        assert published.startswith("127.0.0.1:"), f"Flower published beyond this host: {port}"
    assert set(flower["environment"]) == {"REDIS_URL", "FLOWER_BASIC_AUTH"}, "Flower holds no FAMA secret"
    script = flower["command"][-1].replace("$$", "$")
    assert "--basic-auth=" in script
    refused = subprocess.run(["sh", "-c", script], env={"PATH": os.environ["PATH"], "REDIS_URL": "redis://x"},
                             capture_output=True, text=True, timeout=30)
    assert refused.returncode != 0 and "FLOWER_BASIC_AUTH" in refused.stderr


# Secrets each service may hold; anything else secret must not reach its containers. Every service
# signs its events and checks the other two services' signatures, so each holds the three event keys.
EVENT_KEYS = {"DIRECTORY_EVENT_KEYS", "REFERRALS_EVENT_KEYS", "NOTIFICATIONS_EVENT_KEYS"}
OWN_SECRETS = {
    "directory": EVENT_KEYS | {"JWT_SECRET", "DIRECTORY_ENCRYPTION_KEYS", "DIRECTORY_DATABASE_URL"},
    "referrals": EVENT_KEYS | {"JWT_SECRET", "REFERRALS_ENCRYPTION_KEYS", "REFERRALS_DATABASE_URL", "CONTACT_TRANSIT_KEYS"},
    "notifications": EVENT_KEYS | {"JWT_SECRET", "NOTIFICATIONS_ENCRYPTION_KEYS", "NOTIFICATIONS_DATABASE_URL",
                      "CONTACT_TRANSIT_KEYS", "NOTIFICATIONS_HASH_KEY", "NOTIFICATIONS_CALLBACK_TOKEN",
                      "NOTIFICATIONS_NOTIFY_API_KEY"},
}
ALL_SECRETS = set().union(*OWN_SECRETS.values())


def test_each_container_gets_only_its_own_services_secrets(compose):
    checked = 0
    for name, service in compose["services"].items():
        owner, _, role = name.partition("-")
        if owner not in OWN_SECRETS or role not in APP_ROLES:
            continue
        held = set(service["environment"]) & ALL_SECRETS
        assert held <= OWN_SECRETS[owner], f"{name} holds {sorted(held - OWN_SECRETS[owner])}"
        assert f"{owner.upper()}_DATABASE_URL" in held and f"{owner.upper()}_ENCRYPTION_KEYS" in held, name
        checked += 1
    assert checked == 3 * 4 + 1, "every API, worker, scheduler, migration and the sender were checked"
    directory = compose["services"]["directory-worker"]["environment"]
    assert "CONTACT_TRANSIT_KEYS" not in directory, "the directory never needs to open a contact"


def test_each_containers_own_settings_pass_the_production_checks():
    """With real secrets in .env, every app container has all its service needs to start in
    production (and, above, nothing of the other services')."""
    import secrets
    import sys

    from shared.crypto import generate_key

    strong = {"JWT_SECRET": secrets.token_urlsafe(32), "POSTGRES_PASSWORD": secrets.token_urlsafe(16),
              "REDIS_PASSWORD": secrets.token_urlsafe(24), "CONTACT_TRANSIT_KEYS": generate_key(),
              "NOTIFICATIONS_HASH_KEY": secrets.token_hex(32), "NOTIFICATIONS_CALLBACK_TOKEN": secrets.token_urlsafe(32),
              "NOTIFICATIONS_NOTIFY_API_KEY": "fama_live-" + secrets.token_hex(16),
              **{f"{s.upper()}_ENCRYPTION_KEYS": generate_key() for s in queues.SERVICES},
              **{f"{s.upper()}_EVENT_KEYS": secrets.token_urlsafe(32) for s in queues.SERVICES}}
    result = compose_config(strong)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    for name in queues.SERVICES:
        env = {k: str(v) for k, v in services[f"{name}-worker"]["environment"].items()}
        check = (f"from services.{name}.config import Settings; s = Settings(); "
                 "assert s.environment == 'production'; print(s.production_problems())")
        run = subprocess.run([sys.executable, "-c", check], cwd="/", capture_output=True, text=True, timeout=60,
                             env={**env, "PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT)})
        assert run.returncode == 0 and run.stdout.strip() == "[]", f"{name}: {run.stderr[-1500:]}"
