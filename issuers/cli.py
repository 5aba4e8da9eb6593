"""`clearing tiers ...`: programs' tiers from the command line."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Annotated

import typer
from sqlalchemy import Engine

tiers_app = typer.Typer(help="Programs' tiers: list them, run the anniversary review.")


def _database(ctx: typer.Context) -> Engine:
    open_database: Callable[[], Engine] = ctx.obj
    if not callable(open_database):
        raise RuntimeError("the tiers commands run under `clearing`, which opens the database")
    return open_database()


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"not a date (YYYY-MM-DD): {text!r}") from None


@tiers_app.command("list")
def list_command(ctx: typer.Context, program: Annotated[str, typer.Argument()]) -> None:
    """List a program's tiers, base first."""
    from clearing.core.db import transaction
    from issuers.tiering import list_tiers

    with transaction(_database(ctx)) as session:
        tiers = list_tiers(session, None, program)
    for t in tiers:
        typer.echo(
            f"{t.rank} {t.code} x{t.multiplier} points>={t.qualify_points or '-'}"
            f" spend>={t.qualify_spend or '-'} v{t.version} [{', '.join(t.privileges)}]"
        )
    if not tiers:
        typer.echo(f"program {program} has no tiers")


@tiers_app.command("review")
def review_command(
    ctx: typer.Context,
    day: Annotated[
        date | None,
        typer.Option("--date", help="Anniversary day, YYYY-MM-DD (default: today)", parser=_date),
    ] = None,
    program: Annotated[
        list[str] | None, typer.Option("--program", help="Only this program")
    ] = None,
) -> None:
    """Re-qualify the members whose anniversary is the day (as of now): down or up."""
    from clearing.core.timeutil import utcnow
    from issuers.tasks import run_review

    done = run_review(_database(ctx), utcnow(), day, program)
    for code, reviewed in done.reviewed.items():
        typer.echo(
            f"{code} {done.days[code]}: {reviewed} reviewed,"
            f" {done.upgraded[code]} upgraded, {done.downgraded[code]} downgraded"
        )
    if not done.reviewed:
        typer.echo("no tiered programs")
