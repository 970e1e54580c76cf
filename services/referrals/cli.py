"""``fama referrals ...`` commands."""

import typer

from services.referrals.runtime import runtime
from shared.runtime import run_periodic

app = typer.Typer(help="The referrals service.", no_args_is_help=True)


@app.command()
def migrate() -> None:
    """Upgrade the referrals database to the latest schema."""
    runtime.migrate()
    typer.echo("referrals: database migrated")


@app.command()
def scheduler(stop_after: float = typer.Option(None, help="Stop after this many seconds (tests).")) -> None:
    """Run the periodic jobs: the outbox sweep."""
    run_periodic([("outbox_sweep", runtime.settings.outbox_sweep_seconds, runtime.sweep_outbox)], stop_after=stop_after)
