"""`clearing settlement ...`: run or resume a batch, list batches, verify files."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import Engine

settlement_app = typer.Typer(help="Daily settlement batches and their files.", no_args_is_help=True)


def _database(ctx: typer.Context) -> Engine:
    """The configured database, opened by the command line that mounts this group (`ctx.obj`),
    which checks its schema first; a failure is said in one line by that command line."""
    open_database: Callable[[], Engine] = ctx.obj
    if not callable(open_database):
        raise RuntimeError("the settlement commands run under `clearing`, which opens the database")
    return open_database()


def _business_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"not a date (YYYY-MM-DD): {text!r}") from None


def _instant(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"not an ISO 8601 instant: {text!r}") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@settlement_app.command("run")
def run(
    ctx: typer.Context,
    business_date: Annotated[
        date,
        typer.Option("--date", help="Business day to settle, YYYY-MM-DD", parser=_business_date),
    ],
    currency: Annotated[str, typer.Option(help="ISO 4217 currency")] = "CNY",
    as_of: Annotated[
        datetime | None,
        typer.Option(
            help="Act as of this ISO 8601 instant (default: now); for replays and tests",
            parser=_instant,
        ),
    ] = None,
    engine_name: Annotated[
        str | None,
        typer.Option(
            "--engine",
            help="pandas (one machine) or spark (CLEARING_SPARK_MASTER); "
            "default CLEARING_SETTLEMENT_ENGINE, else pandas",
        ),
    ] = None,
) -> None:
    """Run the batch of one business day, or resume it where it stopped; prints its folder."""
    from clearing.core.config import Settings, with_settlement_engine
    from clearing.core.timeutil import utcnow
    from settlement.service import run_batch

    try:
        settings = with_settlement_engine(Settings.from_env(), engine_name)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--engine") from None
    engine = _database(ctx)
    try:
        batch = run_batch(engine, business_date, currency.upper(), as_of or utcnow(), settings)
    finally:
        engine.dispose()
    typer.echo(
        f"{batch.id} {batch.state}: {batch.line_count} obligations, "
        f"{len(batch.positions)} parties, fee income {batch.fee_income}"
    )
    typer.echo(f"files: {batch.directory}")


@settlement_app.command("status")
def status(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, help="Batches to show")] = 30,
) -> None:
    """List the latest batches, newest first."""
    from clearing.core.db import transaction
    from settlement import repository as repo

    engine = _database(ctx)
    with transaction(engine) as session:
        batches = repo.list_batches(session, limit=limit)
        rows = [
            (
                b.id,
                b.business_date.isoformat(),
                b.currency,
                str(b.sequence),
                b.state,
                "" if b.line_count is None else str(b.line_count),
                "" if b.amount_total is None else str(b.amount_total),
                "" if b.published_at is None else repo.utc(b.published_at).isoformat(),
                (b.error or "")[:60],
            )
            for b in batches
        ]
    engine.dispose()
    header = ("batch", "date", "cur", "seq", "state", "lines", "amount", "published", "error")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        typer.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    if not rows:
        typer.echo("(no batches)")


@settlement_app.command("verify")
def verify(
    directory: Annotated[
        Path,
        typer.Argument(
            help="A party folder, a batch folder or the settlement root",
            exists=True,
            file_okay=False,
        ),
    ],
    public_key: Annotated[
        Path | None,
        typer.Option(
            help="Platform public key (PEM); default: the configured platform key",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
) -> None:
    """Recompute every control total and check every manifest signature; exit 1 on any error."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from clearing.core.config import Settings
    from clearing.web.platform_key import load_or_create
    from settlement.service import verify_tree

    if public_key is not None:
        try:
            loaded = serialization.load_pem_public_key(public_key.read_bytes())
        except ValueError:
            loaded = None
        if not isinstance(loaded, Ed25519PublicKey):
            typer.echo(f"error: {public_key} is not an Ed25519 public key", err=True)
            raise typer.Exit(1)
        key = loaded
    else:
        path = Settings.from_env().platform_key_path
        if not path.exists():
            typer.echo(f"error: no platform key at {path}; pass --public-key", err=True)
            raise typer.Exit(1)
        key = load_or_create(path).public_key
    checked, errors = verify_tree(directory, key)
    for error in errors:
        typer.echo(error, err=True)
    if errors:
        raise typer.Exit(1)
    typer.echo(f"verified {checked} folder(s): control totals, hashes and signatures check out")
