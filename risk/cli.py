"""`clearing risk ...`: the operator's risk controls from the command line."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Annotated

import typer
from sqlalchemy import Engine

risk_app = typer.Typer(
    help="Risk controls: limits, decisions, the anomaly scan.", no_args_is_help=True
)


def database(ctx: typer.Context) -> Engine:
    """The configured database, opened (schema checked) by the command line that mounts this."""
    open_database: Callable[[], Engine] = ctx.obj
    if not callable(open_database):
        raise RuntimeError("the risk commands run under `clearing`, which opens the database")
    return open_database()


def business_date(text: str) -> date:
    """A YYYY-MM-DD option, or one line saying it is not one."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"not a date (YYYY-MM-DD): {text!r}") from None


@risk_app.command("decisions")
def decisions_command(
    ctx: typer.Context,
    day: Annotated[
        date | None,
        typer.Option("--date", help="Business day, YYYY-MM-DD", parser=business_date),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many, newest first")] = 50,
) -> None:
    """List recent risk decisions (declines, reviews and the allows that follow a review)."""
    from clearing.core.config import Settings
    from clearing.core.db import transaction
    from risk.decisions import list_decisions

    engine = database(ctx)
    with transaction(engine) as session:
        found = list_decisions(session, day=day, zone=Settings.from_env().zone, limit=limit)
    for d in found:
        typer.echo(
            f"{d.decided_at.isoformat()} {d.action} {d.outcome} {d.code or '-'}"
            f" rule={d.rule_id or '-'}@{d.rule_version or '-'} {d.reason}"
        )
    if not found:
        typer.echo("no decisions")
