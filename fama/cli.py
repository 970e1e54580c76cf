"""Entry point of the ``fama`` console script."""

from __future__ import annotations

import datetime as dt
import importlib
import os
from pathlib import Path
from urllib.parse import urlsplit

import typer
from alembic import command

from shared.auth import Role, issue_token
from shared.db import alembic_config
from shared.queues import SERVICES
from shared.settings import ServiceSettings

app = typer.Typer(help="FAMA — Facilitating Access to Mutual Aid.", no_args_is_help=True)
for _name in SERVICES:
    app.add_typer(importlib.import_module(f"services.{_name}.cli").app, name=_name)


def _runtime(service: str):
    return importlib.import_module(f"services.{service}.runtime").runtime


@app.command()
def token(
    role: Role = typer.Option(..., help="keyworker, site_lead, commissioner or admin"),
    site: str = typer.Option(None, help="Site id, for keyworkers and site leads"),
    region: str = typer.Option(None, help="Region, for commissioners"),
    subject: str = typer.Option("dev-user", help="Who the token is for"),
    hours: float = typer.Option(None, help="Lifetime in hours (default and most: JWT_MAX_LIFETIME_HOURS)"),
) -> None:
    """Print a signed development token (HS256 with JWT_SECRET)."""
    if role in (Role.keyworker, Role.site_lead) and not site:
        raise typer.BadParameter("keyworkers and site leads need --site")
    settings = ServiceSettings()
    if hours is not None and not 0 < hours <= settings.jwt_max_lifetime_hours:
        raise typer.BadParameter(f"a token lives more than 0 and at most {settings.jwt_max_lifetime_hours:g} hours "
                                 "(JWT_MAX_LIFETIME_HOURS)", param_hint="--hours")
    typer.echo(issue_token(settings, role=role, site=site, region=region, subject=subject,
                           ttl=None if hours is None else dt.timedelta(hours=hours)))


@app.command()
def migrate(service: list[str] = typer.Argument(None, help="Services to migrate (default: all)")) -> None:
    """Upgrade each service's own database with its own migrations."""
    for name in service or SERVICES:
        _runtime(name).migrate()
        typer.echo(f"{name}: database migrated")


@app.command()
def revision(service: str, message: str = typer.Option(..., "-m")) -> None:
    """Autogenerate a migration for SERVICE from its models (developers)."""
    rt = _runtime(service)
    command.revision(alembic_config(rt.migrations_dir, rt.settings.database_url), message=message, autogenerate=True)


@app.command()
def seed() -> None:
    """Load the demo pilot sites and meetings (idempotent)."""
    from services.directory.seed import seed_demo

    created = seed_demo()
    typer.echo(f"seeded {created['sites']} sites and {created['meetings']} meetings")


@app.command()
def run(port_base: int = typer.Option(8001, help="First API port")) -> None:
    """Start everything locally: Redis (found, or started: redis-server, else the bundled one), migrations, demo data,
    APIs, workers, schedulers."""
    from fama.devrun import run_local

    run_local(Path.cwd())


def settings_table() -> list[tuple[str, str, object, object]]:
    """(environment variable, services using it, default, current value) for every setting."""
    rows: dict[str, list] = {}
    for name in SERVICES:
        settings = importlib.import_module(f"services.{name}.config").get_settings()
        for field_name, field in type(settings).model_fields.items():
            env = type(settings).env_name(field_name)
            row = rows.setdefault(env, [env, [], field.default, getattr(settings, field_name)])
            row[1].append(name)
    table = [(env, "all" if len(used) == len(SERVICES) else ", ".join(used), default, current)
             for env, used, default, current in rows.values()]
    return sorted(table, key=lambda r: (r[1] != "all", r[0]))


SECRET_WORDS = ("SECRET", "KEY", "TOKEN", "PASSWORD")
NOT_SECRET = ("REDIS_KEY_PREFIX",)


def is_secret(env: str) -> bool:
    return any(w in env for w in SECRET_WORDS) and env not in NOT_SECRET


def mask_url(value: str) -> str:
    """A URL with its password (if any) replaced by ***; user, host and path kept for diagnosis.

    The user information ends at the last "@" (a password may itself hold "@", "/" or "?").
    """
    parts = urlsplit(value)
    if not parts.scheme or "://" not in value:
        return value
    rest = value.split("://", 1)[1]
    if "@" in rest[len(parts.netloc):]:
        userinfo, _, host = rest.rpartition("@")  # urlsplit stopped inside the password
    elif parts.password is not None:
        userinfo, _, host = parts.netloc.rpartition("@")
        host += rest[len(parts.netloc):]
    else:
        return value
    if ":" not in userinfo:
        return value  # a user name, no password
    return f"{parts.scheme}://{userinfo.split(':', 1)[0]}:***@{host}"


def shown_value(env: str, value: object, default: object) -> str:
    """How ``fama config`` shows a setting: secrets never, URLs without their password."""
    if is_secret(env):
        if not value:
            return "(not set)"
        return "(set)" if value != default else "(development default)"
    text = str(value)
    return mask_url(text) if "://" in text else text


@app.command("config")
def show_config() -> None:
    """Print every setting: its environment variable, default and current value (secrets masked)."""
    from rich.console import Console
    from rich.table import Table

    table = Table("setting", "service", "default", "current")
    for env, service, default, current in settings_table():
        shown = shown_value(env, current, default)
        if is_secret(env):
            default = "(development value)" if default else ""
        else:
            default = shown_value(env, default, default)
        table.add_row(env, service, str(default), shown)
    Console(width=max(Console().width, 140)).print(table)


@app.command("check-redis")
def check_redis() -> None:
    """Exit 0 if REDIS_URL answers."""
    import redis

    url = os.environ.get("REDIS_URL", ServiceSettings().redis_url)
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except Exception as exc:
        typer.echo(f"Redis at {mask_url(url)} does not answer: {type(exc).__name__}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"Redis at {mask_url(url)} answers")



if __name__ == "__main__":
    app()
