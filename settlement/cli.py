"""`clearing settlement ...`: run or resume a batch, list batches, verify files."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated

import typer

settlement_app = typer.Typer(help="Daily settlement batches and their files.", no_args_is_help=True)


def _as_of(text: str | None) -> datetime:
    from clearing.core.timeutil import utcnow

    if text is None:
        return utcnow()
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


@settlement_app.command("run")
def run(
    business_date: Annotated[
        str, typer.Option("--date", help="Business day to settle, YYYY-MM-DD")
    ],
    currency: Annotated[str, typer.Option(help="ISO 4217 currency")] = "CNY",
    as_of: Annotated[
        str | None,
        typer.Option(help="Act as of this ISO 8601 instant (default: now); for replays and tests"),
    ] = None,
) -> None:
    """Run the batch of one business day, or resume it where it stopped; prints its folder."""
    from clearing.core.config import Settings
    from clearing.core.errors import ClearingError
    from settlement.service import run_batch

    settings = Settings.from_env()
    engine = settings.open_engine()
    try:
        day = date.fromisoformat(business_date)
        batch = run_batch(engine, day, currency.upper(), _as_of(as_of), settings)
    except (ClearingError, ValueError) as error:
        code = getattr(error, "code", "invalid_input")
        typer.echo(f"error: {code}: {error}", err=True)
        raise typer.Exit(1) from None
    finally:
        engine.dispose()
    typer.echo(
        f"{batch.id} {batch.state}: {batch.line_count} obligations, "
        f"{len(batch.positions)} parties, fee income {batch.fee_income}"
    )
    typer.echo(f"files: {batch.directory}")


@settlement_app.command("status")
def status(limit: Annotated[int, typer.Option(help="Batches to show")] = 30) -> None:
    """List the latest batches, newest first."""
    from clearing.core.config import Settings
    from clearing.core.db import transaction
    from settlement import repository as repo

    settings = Settings.from_env()
    engine = settings.open_engine()
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
        Path, typer.Argument(help="A party folder, a batch folder or the settlement root")
    ],
    public_key: Annotated[
        Path | None,
        typer.Option(help="Platform public key (PEM); default: the configured platform key"),
    ] = None,
) -> None:
    """Recompute every control total and check every manifest signature; exit 1 on any error."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from clearing.core.config import Settings
    from clearing.web.platform_key import load_or_create
    from settlement.service import verify_tree

    if public_key is not None:
        loaded = serialization.load_pem_public_key(public_key.read_bytes())
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
    if not directory.is_dir():
        typer.echo(f"error: {directory} is not a directory", err=True)
        raise typer.Exit(1)
    checked, errors = verify_tree(directory, key)
    for error in errors:
        typer.echo(error, err=True)
    if errors:
        raise typer.Exit(1)
    typer.echo(f"verified {checked} folder(s): control totals, hashes and signatures check out")
