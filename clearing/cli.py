"""The `clearing` command line."""

from __future__ import annotations

import typer
from sqlalchemy import Engine

from clearing.config import Settings
from clearing.db import make_engine, transaction
from clearing.timeutil import utcnow

app = typer.Typer(help="Points clearing platform.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
ledger_app = typer.Typer(help="The ledger.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(ledger_app, name="ledger")


def _engine() -> Engine:
    return make_engine(Settings.from_env().database_url)


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head")) -> None:
    """Apply migrations up to REVISION (default: the latest)."""
    from clearing.migrate import upgrade

    upgrade(_engine(), revision)
    typer.echo(f"database at {revision}")


@ledger_app.command("check")
def ledger_check() -> None:
    """Recompute every balance from the postings and report any difference."""
    import clearing.tables  # noqa: F401
    from clearing.check import check_ledger

    with transaction(_engine()) as session:
        errors = check_ledger(session)
    for error in errors:
        typer.echo(error, err=True)
    if errors:
        raise typer.Exit(1)
    typer.echo("ledger check: clean")


@app.command("expire")
def expire(limit: int = typer.Option(10_000, help="Lots per transaction.")) -> None:
    """Post the expiry of every lot due now, and release holds past their time-to-live."""
    import clearing.tables  # noqa: F401
    from clearing.ledger import Ledger, expire_due_lots

    engine = _engine()
    total = 0
    while True:
        with transaction(engine) as session:
            now = utcnow()
            Ledger(session).release_expired_holds(now, limit=limit)
            points = expire_due_lots(session, now, limit)
        total += points
        if points == 0:
            break
    typer.echo(f"expired {total} points")


@app.command("demo")
def demo() -> None:
    """Run one business day end to end on the configured database (SQLite by default)."""
    from clearing.demo import run_demo

    raise typer.Exit(run_demo(Settings.from_env()))
