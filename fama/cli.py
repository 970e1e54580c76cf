"""Entry point of the ``fama`` console script."""

from __future__ import annotations

import datetime as dt
import importlib
import os
import re
from pathlib import Path

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
    hours: float = typer.Option(12, help="Lifetime in hours"),
) -> None:
    """Print a signed development token (HS256 with JWT_SECRET)."""
    if role in (Role.keyworker, Role.site_lead) and not site:
        raise typer.BadParameter("keyworkers and site leads need --site")
    typer.echo(issue_token(ServiceSettings(), role=role, site=site, region=region, subject=subject,
                           ttl=dt.timedelta(hours=hours)))


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
    """Start everything locally: Redis check, migrations, demo data, APIs, workers, schedulers."""
    from fama.devrun import run_local

    run_local(Path.cwd())


def settings_table() -> list[tuple[str, str, object, object]]:
    """(environment variable, services using it, default, current value) for every setting."""
    rows: dict[str, list] = {}
    for name in SERVICES:
        settings = importlib.import_module(f"services.{name}.config").get_settings()
        prefix = type(settings).model_config.get("env_prefix", "")
        for field_name, field in type(settings).model_fields.items():
            alias = field.validation_alias
            env = alias.choices[0] if alias is not None else f"{prefix}{field_name}".upper()
            row = rows.setdefault(env, [env, [], field.default, getattr(settings, field_name)])
            row[1].append(name)
    table = [(env, "all" if len(used) == len(SERVICES) else ", ".join(used), default, current)
             for env, used, default, current in rows.values()]
    return sorted(table, key=lambda r: (r[1] != "all", r[0]))


SECRET_WORDS = ("SECRET", "KEY", "TOKEN", "PASSWORD")


@app.command("config")
def show_config() -> None:
    """Print every setting: its environment variable, default and current value."""
    from rich.console import Console
    from rich.table import Table

    table = Table("setting", "service", "default", "current")
    for env, service, default, current in settings_table():
        if any(w in env for w in SECRET_WORDS) and env != "REDIS_KEY_PREFIX":
            shown = "(set)" if current != default else "(development default)"
            default = "(development value)" if default else ""
        elif "DATABASE_URL" in env or env == "REDIS_URL":
            shown = re.sub(r"//([^:@/]+):[^@]+@", r"//\\1:***@", str(current))
        else:
            shown = str(current)
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
        typer.echo(f"Redis at {url} does not answer: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"Redis at {url} answers")



if __name__ == "__main__":
    app()
