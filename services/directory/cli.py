"""``fama directory ...`` commands."""

from __future__ import annotations

from itertools import islice
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import delete, func, insert, select

from services.directory import answers, feeds, geocode, service
from services.directory.models import Meeting, Postcode
from services.directory.runtime import runtime
from services.directory.schemas import MeetingIn
from shared.runtime import run_periodic

app = typer.Typer(help="The directory service.", no_args_is_help=True)
console = Console(stderr=True)


@app.command()
def migrate() -> None:
    """Upgrade the directory database to the latest schema."""
    runtime.migrate()
    typer.echo("directory: database migrated")


@app.command()
def scheduler(stop_after: float = typer.Option(None, help="Stop after this many seconds (tests).")) -> None:
    """Run the periodic jobs: the outbox sweep, the pruning of delivered events, the feed sources due and
    the pruning of closed problem reports."""
    from services.directory import feed_sources
    from services.directory.admin import prune_closed_requests

    run_periodic([*runtime.periodic_jobs(),
                  ("feed_imports", runtime.settings.feed_check_seconds, feed_sources.run_due),
                  ("change_request_prune", runtime.settings.event_prune_seconds, prune_closed_requests)],
                 stop_after=stop_after)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=False)


@app.command("import")
def import_feed(
    path_or_url: str = typer.Argument(..., help="A Meeting Guide JSON file, or its http(s) address"),
    source: str = typer.Option(None, help="Name of the feed's source (default: the file name)"),
    fellowship: str = typer.Option("aa", help="Fellowship of meetings that do not say"),
    timezone: str = typer.Option("Europe/London", help="IANA timezone of meetings that do not say"),
) -> None:
    """Import a Meeting Guide feed: create, update, leave unchanged, withdraw what vanished."""
    try:
        MeetingIn.iana_timezone(timezone)
        rows = feeds.read_feed(path_or_url)
    except (feeds.FeedError, ValueError) as exc:
        console.print(f"[red]Refused:[/red] {exc}. Nothing was changed.")
        raise typer.Exit(2) from exc
    source = source or path_or_url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".json")
    with _progress() as progress, runtime.transaction() as session:
        task = progress.add_task(f"Importing {source}", total=len(rows))
        report = feeds.import_feed(session, rows=rows, source=source, fellowship=fellowship, timezone=timezone,
                                   progress=lambda n: progress.advance(task, n))
    typer.echo(f"{report.source}: {report.rows} rows, {report.created} created, {report.updated} updated, "
               f"{report.unchanged} unchanged, {report.withdrawn} withdrawn, {len(report.rejected)} rejected")
    for zone, rows_there in report.timezone_mismatch.items():
        typer.echo(f"  {rows_there} rows lie in timezone {zone}, not {timezone}: refused. If the feed is of {zone}, "
                   f"import it again with --timezone {zone}")
    for rejection in report.rejected:
        typer.echo(f"  row {rejection.row} ({rejection.slug or 'no slug'}): {rejection.reason}")
    if report.kept_as_they_were:
        typer.echo(f"  {report.kept_as_they_were} meetings of rejected rows were kept as they were")
    for note in report.left_out:
        typer.echo(f"  row {note.row} ({note.slug or 'no slug'}) imported without a value: {note.reason}")
    if report.unknown_types:
        typer.echo("  type codes kept aside (not in the Meeting Guide spec): "
                   + ", ".join(f"{code} x{n}" for code, n in report.unknown_types.items()))


@app.command()
def postcodes(
    path: Path = typer.Argument(..., exists=True, dir_okay=False,
                                help="The ONS Postcode Directory CSV (ONSPD_..._UK.csv from the ONS Open Geography Portal)"),
) -> None:
    """Load the ONS Postcode Directory: full postcodes are then placed exactly, and unknown ones refused.

    Replaces what was loaded before, in one transaction; terminated postcodes are left out.
    """
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh, runtime.transaction() as session:
            session.execute(delete(Postcode))
            answers.changed(session)  # a full postcode is now placed exactly: searches near one change
            loaded = 0
            with _progress() as progress:
                task = progress.add_task("Loading postcodes", total=None)
                rows = geocode.read_onspd(fh)
                while batch := list(islice(rows, 10_000)):
                    session.execute(insert(Postcode), list({row["postcode"]: row for row in batch}.values()))
                    loaded += len(batch)
                    progress.advance(task, len(batch))
            if not loaded:
                raise geocode.PostcodeFileError("it has no live postcode with a location")
    except (geocode.PostcodeFileError, UnicodeDecodeError) as exc:
        console.print(f"[red]Refused:[/red] {exc}. Nothing was changed.")
        raise typer.Exit(2) from exc
    typer.echo(f"postcodes: {loaded} live postcodes loaded from {path.name}")


@app.command()
def replay() -> None:
    """Publish every live meeting again (meeting.published) so replicas can rebuild."""
    with runtime.sessions() as session:
        live = session.scalar(select(func.count()).select_from(Meeting).where(Meeting.active.is_(True))) or 0
    with _progress() as progress:
        task = progress.add_task("Re-publishing meetings", total=live)
        total = service.replay_meetings(progress=lambda n: progress.advance(task, n))
    runtime.sweep_outbox()
    typer.echo(f"re-published {total} meetings")
