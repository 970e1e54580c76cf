"""``fama notifications ...`` commands."""

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from services.notifications.runtime import runtime
from shared.runtime import run_periodic

app = typer.Typer(help="The notifications service.", no_args_is_help=True)


@app.command()
def migrate() -> None:
    """Upgrade the notifications database to the latest schema."""
    runtime.migrate()
    typer.echo("notifications: database migrated")


@app.command()
def scheduler(stop_after: float = typer.Option(None, help="Stop after this many seconds (tests).")) -> None:
    """Run the periodic jobs: the reminder dispatcher, the stuck-send sweeper, the outbox sweep, the
    pruning of delivered events."""
    from services.notifications import sending

    cfg = runtime.settings
    run_periodic([
        ("dispatch_due", cfg.dispatch_seconds, sending.dispatch_due),
        ("requeue_stuck", cfg.sweep_seconds, sending.requeue_stuck),
        *runtime.periodic_jobs(),
    ], stop_after=stop_after)


@app.command()
def outbox(limit: int = typer.Option(20, help="How many of the latest messages")) -> None:
    """Show what the dev provider 'sent': exactly what each client would receive."""
    from services.notifications.models import DevMessage

    with runtime.sessions() as session:
        rows = list(session.scalars(select(DevMessage).order_by(DevMessage.id.desc()).limit(limit)))
    table = Table("when (UTC)", "channel", "to", "message", show_lines=True)
    for row in reversed(rows):
        text = f"[b]{row.subject}[/b]\n{row.body}" if row.subject else row.body
        table.add_row(f"{row.created_at:%Y-%m-%d %H:%M:%S}", row.channel, row.recipient, text)
    Console().print(table if rows else "The dev outbox is empty.")
