"""Entry point of the ``fama`` console script."""

from __future__ import annotations

import datetime as dt
import importlib
import os
from pathlib import Path

import typer
from alembic import command
from alembic.config import Config

from shared.auth import Role, issue_token
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
    cfg = Config()
    cfg.set_main_option("script_location", str(rt.migrations_dir))
    cfg.attributes["database_url"] = rt.settings.database_url
    command.revision(cfg, message=message, autogenerate=True)


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
