"""The `clearing` command line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer
from sqlalchemy import Engine

from clearing.core.config import Settings
from clearing.core.db import transaction
from clearing.core.errors import ClearingError
from clearing.core.timeutil import utcnow
from settlement.cli import settlement_app

app = typer.Typer(help="Points clearing platform.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
ledger_app = typer.Typer(help="The ledger.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(ledger_app, name="ledger")
org_app = typer.Typer(help="Organisations (operator bootstrap).", no_args_is_help=True)
key_app = typer.Typer(help="API keys of organisations.", no_args_is_help=True)
app.add_typer(org_app, name="org")
app.add_typer(key_app, name="key")


def _register_tables() -> None:
    import clearing.app.tables  # noqa: F401  (every package's tables on the one metadata)


# Domains' commands do not import the app: their tables are registered here, before they run.
app.add_typer(settlement_app, name="settlement", callback=_register_tables)


def _engine() -> Engine:
    return Settings.from_env().open_engine()


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head")) -> None:
    """Apply migrations up to REVISION (default: the latest)."""
    from clearing.app.migrate import upgrade

    upgrade(_engine(), revision)
    typer.echo(f"database at {revision}")


@ledger_app.command("check")
def ledger_check() -> None:
    """Recompute every balance from the postings and report any difference."""
    import clearing.app.tables  # noqa: F401
    from clearing.core.check import check_ledger

    with transaction(_engine()) as session:
        errors = check_ledger(session)
    for error in errors:
        typer.echo(error, err=True)
    if errors:
        raise typer.Exit(1)
    typer.echo("ledger check: clean")


@app.command("expire")
def expire(limit: int = typer.Option(10_000, help="Rows per transaction.")) -> None:
    """Release holds past their time-to-live and post the expiry of every lot due now."""
    import clearing.app.tables  # noqa: F401
    from clearing.core.tasks import run_expiry

    released, expired = run_expiry(_engine(), utcnow(), limit)
    typer.echo(f"released {released} expired holds, expired {expired} points")


@app.command("demo")
def demo() -> None:
    """Run one business day end to end on the configured database (SQLite by default)."""
    from clearing.app.demo import run_demo

    raise typer.Exit(run_demo(Settings.from_env()))


def _fail(error: Exception) -> NoReturn:
    # One line on stderr: stdout stays empty so scripts capturing an id see the failure.
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(1)


@org_app.command("create")
def org_create(
    kind: str = typer.Option(..., help="platform, issuer or merchant"),
    name: str = typer.Option(...),
    currency: str = typer.Option("CNY", help="Settlement currency, ISO 4217"),
) -> None:
    """Register an organisation; prints its id alone."""
    import clearing.app.tables  # noqa: F401
    from issuers.organisations import create_organisation
    from issuers.schemas import OrganisationCreate

    try:
        req = OrganisationCreate.model_validate({"kind": kind, "name": name, "currency": currency})
        with transaction(_engine()) as session:
            org = create_organisation(session, req, utcnow())
    except (ClearingError, ValueError) as error:
        _fail(error)
    typer.echo(str(org.id))


@key_app.command("add")
def key_add(
    org_id: Annotated[str, typer.Argument(help="Organisation id")],
    public_key: Annotated[
        Path, typer.Option(help="Public key file: PEM or JWK", exists=True, dir_okay=False)
    ],
) -> None:
    """Register an organisation's public key; prints the key id alone."""
    import uuid

    import clearing.app.tables  # noqa: F401
    from issuers.keys import ApiKeyCreate, add_key

    try:
        req = ApiKeyCreate(public_key=public_key.read_text(encoding="utf-8"))
        with transaction(_engine()) as session:
            key = add_key(session, uuid.UUID(org_id), req, utcnow())
    except (ClearingError, ValueError) as error:
        _fail(error)
    typer.echo(key.keyid)


# A key id is a base64url thumbprint: one in 64 starts with "-", which must not read as an option.
@key_app.command("revoke", context_settings={"ignore_unknown_options": True})
def key_revoke(keyid: str = typer.Argument(...)) -> None:
    """Revoke a key at once."""
    import clearing.app.tables  # noqa: F401
    from issuers.keys import revoke_key

    try:
        with transaction(_engine()) as session:
            revoke_key(session, keyid, utcnow())
    except ClearingError as error:
        _fail(error)
    typer.echo(f"revoked {keyid}")


@app.command("serve")
def serve(
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(8000),
    workers: int = typer.Option(1, help="Worker processes"),
    scheduler: bool = typer.Option(True, help="Run the daily settlement scheduler too"),
) -> None:
    """Serve the signed partner API with uvicorn."""
    import os

    import uvicorn

    os.environ["CLEARING_SCHEDULER"] = "1" if scheduler else "0"

    uvicorn.run(
        "clearing.app.factory:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,
    )


@app.command("scheduler")
def scheduler(
    grace_minutes: Annotated[
        int | None,
        typer.Option(help="Minutes after the cut-off before the daily settlement batch runs"),
    ] = None,
) -> None:
    """Run every scheduled job in the foreground (settlement catches up missed days at start)."""
    import dataclasses
    import time

    from clearing.app.scheduler import start_scheduler

    settings = Settings.from_env()
    if grace_minutes is not None:
        settings = dataclasses.replace(settings, settlement_grace_minutes=grace_minutes)
    running = start_scheduler(settings)
    typer.echo("scheduler running; Ctrl-C to stop")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        running.shutdown()


@app.command("platform-key")
def platform_key() -> None:
    """Print the platform's public key (PEM) and its key id, for partners to verify signatures."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from clearing.web.platform_key import load_or_create

    key = load_or_create(Settings.from_env().platform_key_path)
    pem = key.public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    typer.echo(pem, nl=False)
    typer.echo(f"key id: {key.keyid}", err=True)
