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
    """Run the periodic jobs: the outbox sweep, the pruning of delivered events, the erasure of
    ended referrals' contact details and the pruning of the audit trail."""
    from services.referrals import audit
    from services.referrals.service import run_erasure

    run_periodic([*runtime.periodic_jobs(), ("contact_erasure", runtime.settings.erasure_interval_seconds, run_erasure),
                  ("audit_prune", runtime.settings.erasure_interval_seconds, audit.prune)],
                 stop_after=stop_after)


@app.command("erase-contacts")
def erase_contacts() -> None:
    """Erase now the contact details of referrals that ended more than REFERRALS_RETENTION_DAYS ago."""
    from services.referrals.service import run_erasure

    typer.echo(f"referrals: erased the contact details of {run_erasure()} referrals")
