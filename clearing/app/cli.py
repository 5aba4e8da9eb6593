"""The `clearing` command line."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlalchemy import Engine

# Typer carries its own copy of Click; its exceptions are the ones its parser raises.
from typer._click.core import Context as ClickContext
from typer._click.exceptions import NoArgsIsHelpError, UsageError

from clearing.app.policy import open_engine
from clearing.core.config import Settings
from clearing.core.db import transaction
from clearing.core.errors import ClearingError
from clearing.core.timeutil import utcnow
from issuers.cli import members_app, programs_app, tiers_app
from reports.cli import report_app
from risk.cli import risk_app
from settlement.cli import settlement_app

DEBUG_HINT = "run with --debug for the traceback"


def one_line(error: BaseException) -> str:
    """What went wrong, in one line: the error's own words where they are meant for people."""
    from alembic.util import CommandError
    from pydantic import ValidationError
    from sqlalchemy.exc import DBAPIError

    from clearing.app.migrate import SchemaNotCurrent

    if isinstance(error, ClearingError):
        text = f"{error.code}: {error}"
    elif isinstance(error, ValidationError):
        text = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg']}" for e in error.errors()
        )
    elif isinstance(error, SchemaNotCurrent | OSError | CommandError):
        text = str(error)
    elif isinstance(error, DBAPIError):
        # The driver's first line says what happened; the rest quotes the statement's values.
        first = str(error.orig).strip().splitlines()
        text = f"database error: {first[0] if first else type(error.orig).__name__}; {DEBUG_HINT}"
    else:
        text = f"{type(error).__name__}: {error}; {DEBUG_HINT}"
    return "error: " + " ".join(text.split())


class OneLineErrors(typer.core.TyperGroup):
    """The root command: every failure is one line on stderr and a non-zero exit, no traceback.

    A usage error (Click's) says what was wrong and where the help is; any other exception is
    rendered by `one_line`, unless `--debug` asks for the traceback.
    """

    def invoke(self, ctx: ClickContext) -> Any:
        """Run the command; turn an unexpected exception into one line unless --debug."""
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except Exception as error:
            if ctx.params.get("debug"):
                raise
            typer.echo(one_line(error), err=True)
            raise typer.Exit(1) from None

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """Click's main, with usage errors said in one line instead of a box."""
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except NoArgsIsHelpError as error:
            error.show()  # the help itself, as asked for by running a group alone
            code = error.exit_code
        except typer.TyperException as error:
            where = error.ctx if isinstance(error, UsageError) else None
            hint = f" (see `{where.command_path} --help`)" if where is not None else ""
            typer.echo(f"error: {' '.join(error.format_message().split())}{hint}", err=True)
            code = error.exit_code
        except typer.Abort:
            typer.echo("error: aborted", err=True)
            code = 1
        code = code if isinstance(code, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(
    name="clearing",
    help="Points clearing platform.",
    no_args_is_help=True,
    cls=OneLineErrors,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
ledger_app = typer.Typer(help="The ledger.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(ledger_app, name="ledger")
org_app = typer.Typer(help="Organisations (operator bootstrap).", no_args_is_help=True)
key_app = typer.Typer(help="API keys of organisations.", no_args_is_help=True)
user_app = typer.Typer(help="People who sign in to the console.", no_args_is_help=True)
app.add_typer(org_app, name="org")
app.add_typer(key_app, name="key")
app.add_typer(user_app, name="user")


def _register_tables() -> None:
    import clearing.app.tables  # noqa: F401  (every package's tables on the one metadata)


# Domains' commands do not import the app: their tables are registered here, before they run.
app.add_typer(settlement_app, name="settlement", callback=_register_tables)
app.add_typer(risk_app, name="risk", callback=_register_tables)
app.add_typer(tiers_app, name="tiers", callback=_register_tables)
app.add_typer(programs_app, name="programs", callback=_register_tables)
app.add_typer(members_app, name="members", callback=_register_tables)
app.add_typer(report_app, name="report", callback=_register_tables)


def open_database() -> Engine:
    """The configured database, at the code's revision: SQLite migrates itself, PostgreSQL must
    have been upgraded (`clearing db upgrade`), else SchemaNotCurrent says so in one line."""
    from clearing.app.migrate import ensure_current

    engine = open_engine(Settings.from_env())
    try:
        ensure_current(engine)
    except BaseException:
        engine.dispose()
        raise
    return engine


@app.callback()
def root(
    ctx: typer.Context,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the full traceback of a failure.")
    ] = False,
) -> None:
    """Points clearing platform."""
    # Subcommands of other packages (settlement) open the database through this, so every
    # command meets the same schema check.
    ctx.obj = open_database


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head")) -> None:
    """Apply migrations up to REVISION (default: the latest)."""
    from clearing.app.migrate import upgrade

    upgrade(Settings.from_env().open_engine(), revision)
    typer.echo(f"database at {revision}")


@ledger_app.command("check")
def ledger_check() -> None:
    """Recompute every balance from the postings and report any difference."""
    import clearing.app.tables  # noqa: F401
    from clearing.core.check import check_ledger

    with transaction(open_database()) as session:
        errors = check_ledger(session)
    for error in errors:
        typer.echo(error, err=True)
    if errors:
        raise typer.Exit(1)
    typer.echo("ledger check: clean")


@app.command("expire")
def expire(
    limit: Annotated[int, typer.Option(min=1, help="Holds released per transaction.")] = 10_000,
    chunk: Annotated[
        int, typer.Option(min=1, max=30_000, help="Member accounts expired per transaction.")
    ] = 5000,
) -> None:
    """Release holds past their time-to-live and expire every lot due now, set-based, with a
    progress bar; each chunk commits, so a stopped run is finished by the next."""
    import clearing.app.tables  # noqa: F401
    from clearing.core.ledger.expiry import ExpiryChunk, due_accounts
    from clearing.core.tasks import run_expiry

    engine, now = open_database(), utcnow()
    with transaction(engine) as session:
        total = due_accounts(session, now)
    with typer.progressbar(length=total, label="expiring", file=sys.stderr) as bar:

        def advance(done: ExpiryChunk) -> None:
            bar.update(done.accounts)

        released, expired = run_expiry(engine, now, limit, chunk=chunk, progress=advance)
    typer.echo(f"released {released} expired holds, expired {expired} points")


@app.command("demo")
def demo(
    engine_name: Annotated[
        str | None,
        typer.Option(
            "--engine",
            help="Settle the day on pandas (one machine) or spark (local Spark); "
            "default CLEARING_SETTLEMENT_ENGINE, else pandas",
        ),
    ] = None,
) -> None:
    """Run one business day end to end in a folder of its own (or on CLEARING_DATABASE_URL)."""
    import os

    from clearing.app.demo import prepare_demo, run_demo
    from clearing.core.config import Settings, with_settlement_engine

    try:
        # Checked before prepare_demo empties the demo's folder.
        with_settlement_engine(Settings.from_env(), engine_name)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--engine") from None
    settings, command = prepare_demo(os.environ, _program())
    settings = with_settlement_engine(settings, engine_name)
    raise typer.Exit(run_demo(settings, command=command))


def _program() -> str:
    """How this command was run, to print commands the user can paste back."""
    typed = sys.argv[0] if sys.argv else ""
    return typed if Path(typed).name == "clearing" else "clearing"


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

    # stdout stays empty on failure, so that a script capturing the id sees it fail.
    req = OrganisationCreate.model_validate({"kind": kind, "name": name, "currency": currency})
    with transaction(open_database()) as session:
        org = create_organisation(session, req, utcnow())
    typer.echo(str(org.id))


def _organisation_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise typer.BadParameter(f"not an organisation id: {text!r}") from None


@user_app.command("add")
def user_add(
    org_id: Annotated[
        uuid.UUID, typer.Argument(help="Organisation id", parser=_organisation_id, metavar="ORG_ID")
    ],
    username: Annotated[str, typer.Option(help="Sign-in name: a-z, 0-9, '.', '_', '-'")],
    role: Annotated[str, typer.Option(help="finance, operator, risk_analyst or viewer")],
    name: Annotated[str, typer.Option(help="The person's name, as the console shows it")] = "",
    locale: Annotated[str, typer.Option(help="en or zh_CN")] = "en",
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input")
    ] = False,
) -> None:
    """Create a console user; prints the second factor's secret and its otpauth URI, once."""
    import clearing.app.tables  # noqa: F401
    from reports.console.accounts import add_user
    from reports.console.roles import Role

    try:
        chosen = Role(role)
    except ValueError:
        raise typer.BadParameter(
            f"not a role: {role!r} (one of {', '.join(r.value for r in Role)})"
        ) from None
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    with transaction(open_database()) as session:
        created = add_user(
            session,
            org_id=org_id,
            username=username,
            display_name=name,
            role=chosen,
            password=password,
            locale=locale,
            now=utcnow(),
        )
    typer.echo(f"user {created.user.username} ({created.user.id}) added as {chosen}")
    typer.echo("Add this to the user's authenticator app; it is shown only now:")
    typer.echo(f"  secret: {created.totp_secret}")
    typer.echo(f"  uri:    {created.provisioning_uri}")


@key_app.command("add")
def key_add(
    org_id: Annotated[
        uuid.UUID, typer.Argument(help="Organisation id", parser=_organisation_id, metavar="ORG_ID")
    ],
    public_key: Annotated[
        Path, typer.Option(help="Public key file: PEM or JWK", exists=True, dir_okay=False)
    ],
) -> None:
    """Register an organisation's public key; prints the key id alone."""

    import clearing.app.tables  # noqa: F401
    from issuers.keys import ApiKeyCreate, add_key

    req = ApiKeyCreate(public_key=public_key.read_text(encoding="utf-8"))
    with transaction(open_database()) as session:
        key = add_key(session, org_id, req, utcnow())
    typer.echo(key.keyid)


# A key id is a base64url thumbprint: one in 64 starts with "-", which must not read as an option.
@key_app.command("revoke", context_settings={"ignore_unknown_options": True})
def key_revoke(keyid: str = typer.Argument(...)) -> None:
    """Revoke a key at once."""
    import clearing.app.tables  # noqa: F401
    from issuers.keys import revoke_key

    with transaction(open_database()) as session:
        revoke_key(session, keyid, utcnow())
    typer.echo(f"revoked {keyid}")


@app.command("serve")
def serve(
    host: str = typer.Option("127.0.0.1"),
    port: int = typer.Option(8000, min=0, max=65535),
    workers: int = typer.Option(1, min=1, help="Worker processes"),
    scheduler: bool = typer.Option(True, help="Run the daily settlement scheduler too"),
) -> None:
    """Serve the signed partner API with uvicorn."""
    import os

    import uvicorn

    # Checked (or, on SQLite, migrated) once here, before any worker starts: a server on a
    # database without its tables would only fail at its first request or scheduled job.
    open_database().dispose()
    _can_listen(host, port)
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
        typer.Option(
            min=0, help="Minutes after the cut-off before the daily settlement batch runs"
        ),
    ] = None,
) -> None:
    """Run every scheduled job in the foreground (settlement catches up missed days at start)."""
    import dataclasses
    import time

    from clearing.app.scheduler import start_scheduler

    open_database().dispose()  # the schema check, before the scheduler's own engine starts
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


def _can_listen(host: str, port: int) -> None:
    """Refuse, in one line, an address the server could not listen on (uvicorn would log a
    startup, the error and a shutdown); a port taken in between still fails in uvicorn."""
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
            probe.bind(address)
    except OSError as error:
        reason = error.strerror or str(error)
        raise typer.BadParameter(f"cannot listen on {host}:{port}: {reason}") from None


@app.command("platform-key")
def platform_key() -> None:
    """Print the platform's public key (PEM) and its key id, for partners to verify signatures."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    from clearing.web.platform_key import load_or_create

    key = load_or_create(Settings.from_env().platform_key_path)
    pem = key.public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    typer.echo(pem, nl=False)
    typer.echo(f"key id: {key.keyid}", err=True)
